-- certledger event log, PostgreSQL. Runs with search_path set to the log's schema.
--
-- position: assigned from the identity sequence at insert time. Appenders take a
-- transaction-scoped advisory lock before inserting (see src/postgres.rs), so positions
-- become visible in order and a reader tailing `position > last_seen` never skips one.
-- Positions are increasing but may have gaps (a rolled-back append consumes values).
-- The sequence must keep CACHE 1: with per-session caches a later commit could take a
-- lower position, whatever the lock.
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    stream_id       TEXT   NOT NULL CHECK (stream_id <> ''),
    stream_version  BIGINT NOT NULL CHECK (stream_version >= 1),
    event_id        UUID   NOT NULL,
    event_type      TEXT   NOT NULL CHECK (event_type <> ''),
    schema_version  BIGINT NOT NULL CHECK (schema_version BETWEEN 0 AND 4294967295),
    payload         BYTEA  NOT NULL,
    tenant          TEXT   NOT NULL,
    correlation_id  UUID,
    causation_id    UUID,
    actor           TEXT   NOT NULL,
    trace_context   TEXT,
    recorded_at     BIGINT NOT NULL,  -- microseconds since the Unix epoch, UTC (hashed as is)
    prev_hash       BYTEA  NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            BYTEA  NOT NULL CHECK (octet_length(hash) = 32),
    -- optimistic concurrency backstop: a second writer of the same version fails
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- Append-only in the database itself: every UPDATE, DELETE or TRUNCATE statement on
-- events fails, whatever the client (statement-level, so even one matching no row).
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'certledger event log is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- Positions of named readers (relay, consumers, projections). Mutable; not part of the log.
CREATE TABLE checkpoints (
    name        TEXT   PRIMARY KEY,
    position    BIGINT NOT NULL CHECK (position >= 0),
    updated_at  BIGINT NOT NULL  -- microseconds since the Unix epoch
);
