-- The CRL leg of the revocation clock. A revocation is published when the first CRL of
-- its issuer that lists it is recorded: a CrlPublished event whose revocations_through is
-- at or after the log position of the revocation. Both sides are kept, so the time is
-- the same whichever event the projector sees first.

ALTER TABLE revocations ADD COLUMN issuer TEXT;
ALTER TABLE revocations ADD COLUMN revoked_position INTEGER;
CREATE INDEX revocations_issuer_idx ON revocations (issuer, revoked_position);

-- One row per CrlPublished event (stream crl-<issuer>).
CREATE TABLE crl_publications (
    issuer               TEXT    NOT NULL,
    crl_number           INTEGER NOT NULL,
    this_update          INTEGER NOT NULL,
    next_update          INTEGER,
    entries              INTEGER NOT NULL,
    revocations_through  INTEGER NOT NULL,
    position             INTEGER NOT NULL,
    PRIMARY KEY (issuer, crl_number)
);
CREATE INDEX crl_publications_through_idx ON crl_publications (issuer, revocations_through);
