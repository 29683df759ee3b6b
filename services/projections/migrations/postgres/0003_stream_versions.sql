-- One row per stream for the versions every read model reflects (NULL: none of its
-- events), instead of one row per model and stream: a batch reads and writes a quarter
-- of the rows it did.

CREATE TABLE projection_stream_versions (
    stream_id        TEXT   PRIMARY KEY,
    inventory        BIGINT CHECK (inventory >= 0),
    expiry_calendar  BIGINT CHECK (expiry_calendar >= 0),
    deployments      BIGINT CHECK (deployments >= 0),
    revocations      BIGINT CHECK (revocations >= 0)
);

INSERT INTO projection_stream_versions
    (stream_id, inventory, expiry_calendar, deployments, revocations)
SELECT stream_id,
       MAX(CASE WHEN model = 'inventory' THEN version END),
       MAX(CASE WHEN model = 'expiry_calendar' THEN version END),
       MAX(CASE WHEN model = 'deployments' THEN version END),
       MAX(CASE WHEN model = 'revocations' THEN version END)
FROM projection_streams
GROUP BY stream_id;

DROP TABLE projection_streams;
