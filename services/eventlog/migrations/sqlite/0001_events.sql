-- certledger event log, SQLite.
--
-- position: assigned by the appender inside its write transaction (BEGIN IMMEDIATE holds
-- SQLite's single write lock), as max(position) + 1; commits are therefore in position
-- order and a reader tailing `position > last_seen` never skips one.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY CHECK (position >= 1),
    stream_id       TEXT    NOT NULL CHECK (stream_id <> ''),
    stream_version  INTEGER NOT NULL CHECK (stream_version >= 1),
    event_id        TEXT    NOT NULL CHECK (length(event_id) = 36),  -- UUID, lower-case hyphenated
    event_type      TEXT    NOT NULL CHECK (event_type <> ''),
    schema_version  INTEGER NOT NULL CHECK (schema_version BETWEEN 0 AND 4294967295),
    payload         BLOB    NOT NULL,
    tenant          TEXT    NOT NULL,
    correlation_id  TEXT    CHECK (correlation_id IS NULL OR length(correlation_id) = 36),
    causation_id    TEXT    CHECK (causation_id IS NULL OR length(causation_id) = 36),
    actor           TEXT    NOT NULL,
    trace_context   TEXT,
    recorded_at     INTEGER NOT NULL,  -- microseconds since the Unix epoch, UTC (hashed as is)
    prev_hash       BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash            BLOB    NOT NULL CHECK (length(hash) = 32),
    -- optimistic concurrency backstop: a second writer of the same version fails
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
) STRICT;

-- Append-only in the database itself.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'certledger event log is append-only: UPDATE on events is not allowed');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'certledger event log is append-only: DELETE on events is not allowed');
END;

-- Positions of named readers (relay, consumers, projections). Mutable; not part of the log.
CREATE TABLE checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL CHECK (position >= 0),
    updated_at  INTEGER NOT NULL  -- microseconds since the Unix epoch
) STRICT;
