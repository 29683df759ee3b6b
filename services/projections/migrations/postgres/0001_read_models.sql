-- certledger read models (the query side), PostgreSQL. Runs with search_path set to the
-- projections' schema. Every row is a pure function of its stream's events up to the
-- version in projection_streams, so rebuilding from the log gives the same rows.
-- Times are microseconds since the Unix epoch (UTC), like the event log's recorded_at.

-- One row per read model: how far in the log it has been fed.
CREATE TABLE projection_checkpoints (
    model       TEXT    PRIMARY KEY,
    position    BIGINT  NOT NULL CHECK (position >= 0),
    -- Set while a rebuild replays the log; a crashed rebuild resumes on the next start.
    rebuilding  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at  BIGINT  NOT NULL
);

-- Exactly-once guard: the stream version each read model reflects, per stream. Written in
-- the same transaction as the rows.
CREATE TABLE projection_streams (
    model      TEXT   NOT NULL,
    stream_id  TEXT   NOT NULL,
    version    BIGINT NOT NULL CHECK (version >= 0),
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
    auto_renew           BOOLEAN NOT NULL,
    serial               TEXT,
    not_before           BIGINT,
    not_after            BIGINT,
    fingerprint          TEXT,
    deployment_count     BIGINT  NOT NULL,
    deployment_targets   TEXT    NOT NULL,  -- JSON array of target ids
    status_since         BIGINT  NOT NULL,
    ordered_at           BIGINT  NOT NULL,
    last_failure_reason  TEXT,
    last_failure_code    TEXT,
    last_failure_at      BIGINT,
    next_retry_at        BIGINT,
    predecessor_id       TEXT,
    successor_id         TEXT,
    renewal_state        TEXT,
    validation_failures  BIGINT  NOT NULL,
    issuance_failures    BIGINT  NOT NULL,
    deployment_failures  BIGINT  NOT NULL,
    renewal_failures     BIGINT  NOT NULL,
    stream_version       BIGINT  NOT NULL,
    updated_position     BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL
);
CREATE INDEX inventory_tenant_idx ON inventory (tenant, certificate_id);
CREATE INDEX inventory_tenant_status_idx ON inventory (tenant, status, status_since);

CREATE TABLE expiry_calendar (
    certificate_id    TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    not_before        BIGINT  NOT NULL,
    not_after         BIGINT  NOT NULL,
    renewal_opens_at  BIGINT  NOT NULL,
    auto_renew        BOOLEAN NOT NULL,
    successor_id      TEXT,
    updated_position  BIGINT  NOT NULL
);
CREATE INDEX expiry_calendar_not_after_idx ON expiry_calendar (tenant, not_after);

CREATE TABLE deployments (
    certificate_id           TEXT   NOT NULL,
    target_id                TEXT   NOT NULL,
    tenant                   TEXT   NOT NULL,
    deployment_id            TEXT   NOT NULL,
    state                    TEXT   NOT NULL,
    state_since              BIGINT NOT NULL,
    replaces_certificate_id  TEXT,
    replaced_by              TEXT,
    failure_step             TEXT,
    failure_code             TEXT,
    failure_reason           TEXT,
    observed_fingerprint     TEXT,
    updated_position         BIGINT NOT NULL,
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
    registered_at     BIGINT NOT NULL,
    updated_position  BIGINT NOT NULL
);

CREATE TABLE revocations (
    certificate_id    TEXT   PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    serial            TEXT,
    reason            TEXT   NOT NULL,
    requested_by      TEXT,
    requested_at      BIGINT,
    revoked_at        BIGINT,
    -- Set once the revocation service records the re-signed CRL (no event yet).
    crl_published_at  BIGINT,
    updated_position  BIGINT NOT NULL
);
CREATE INDEX revocations_tenant_idx ON revocations (tenant, requested_at);
