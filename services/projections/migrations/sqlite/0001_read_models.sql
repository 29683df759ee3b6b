-- certledger read models (the query side), SQLite. Booleans are INTEGER 0/1.
-- Every row is a pure function of its stream's events up to the
-- version in projection_streams, so rebuilding from the log gives the same rows.
-- Times are microseconds since the Unix epoch (UTC), like the event log's recorded_at.

-- One row per read model: how far in the log it has been fed.
CREATE TABLE projection_checkpoints (
    model       TEXT    PRIMARY KEY,
    position    INTEGER  NOT NULL CHECK (position >= 0),
    -- Set while a rebuild replays the log; a crashed rebuild resumes on the next start.
    rebuilding  INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER  NOT NULL
);

-- Exactly-once guard: the stream version each read model reflects, per stream. Written in
-- the same transaction as the rows.
CREATE TABLE projection_streams (
    model      TEXT   NOT NULL,
    stream_id  TEXT   NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 0),
    PRIMARY KEY (model, stream_id)
);

CREATE TABLE inventory (
    certificate_id       TEXT    PRIMARY KEY,
    tenant               TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    domains              TEXT    NOT NULL,  -- JSON array of names (DNS names, then IPs)
    issuer               TEXT    NOT NULL,
    key_algorithm        TEXT    NOT NULL,
    validation_method    TEXT    NOT NULL,
    auto_renew           INTEGER NOT NULL,
    serial               TEXT,
    not_before           INTEGER,
    not_after            INTEGER,
    fingerprint          TEXT,
    deployment_count     INTEGER  NOT NULL,
    deployment_targets   TEXT    NOT NULL,  -- JSON array of target ids
    status_since         INTEGER  NOT NULL,
    ordered_at           INTEGER  NOT NULL,
    last_failure_reason  TEXT,
    last_failure_code    TEXT,
    last_failure_at      INTEGER,
    next_retry_at        INTEGER,
    predecessor_id       TEXT,
    successor_id         TEXT,
    renewal_state        TEXT,
    validation_failures  INTEGER  NOT NULL,
    issuance_failures    INTEGER  NOT NULL,
    deployment_failures  INTEGER  NOT NULL,
    renewal_failures     INTEGER  NOT NULL,
    stream_version       INTEGER  NOT NULL,
    updated_position     INTEGER  NOT NULL,
    updated_at           INTEGER  NOT NULL
);
CREATE INDEX inventory_tenant_idx ON inventory (tenant, certificate_id);
CREATE INDEX inventory_tenant_status_idx ON inventory (tenant, status, status_since);

CREATE TABLE expiry_calendar (
    certificate_id    TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    not_before        INTEGER  NOT NULL,
    not_after         INTEGER  NOT NULL,
    renewal_opens_at  INTEGER  NOT NULL,
    auto_renew        INTEGER NOT NULL,
    successor_id      TEXT,
    updated_position  INTEGER  NOT NULL
);
CREATE INDEX expiry_calendar_not_after_idx ON expiry_calendar (tenant, not_after);

CREATE TABLE deployments (
    certificate_id           TEXT   NOT NULL,
    target_id                TEXT   NOT NULL,
    tenant                   TEXT   NOT NULL,
    deployment_id            TEXT   NOT NULL,
    state                    TEXT   NOT NULL,
    state_since              INTEGER NOT NULL,
    replaces_certificate_id  TEXT,
    replaced_by              TEXT,
    failure_step             TEXT,
    failure_code             TEXT,
    failure_reason           TEXT,
    observed_fingerprint     TEXT,
    updated_position         INTEGER NOT NULL,
    PRIMARY KEY (certificate_id, target_id)
);
CREATE INDEX deployments_target_idx ON deployments (tenant, target_id);
CREATE INDEX deployments_state_idx ON deployments (tenant, state);

CREATE TABLE targets (
    target_id         TEXT   PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    kind              TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    removal_reason    TEXT,
    registered_at     INTEGER NOT NULL,
    updated_position  INTEGER NOT NULL
);

CREATE TABLE revocations (
    certificate_id    TEXT   PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    serial            TEXT,
    reason            TEXT   NOT NULL,
    requested_by      TEXT,
    requested_at      INTEGER,
    revoked_at        INTEGER,
    -- Set once the revocation service records the re-signed CRL (no event yet).
    crl_published_at  INTEGER,
    updated_position  INTEGER NOT NULL
);
CREATE INDEX revocations_tenant_idx ON revocations (tenant, requested_at);
