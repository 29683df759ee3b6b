-- certledger on PostgreSQL: one database, one role per deployment.
-- Run as a superuser: psql -v ON_ERROR_STOP=1 -f deploy/postgres/setup.sql
-- Every service connects with the same role; the event log lives in schema "eventlog"
-- (created and migrated by the services at start), read models in their own schemas.
CREATE ROLE certledger LOGIN PASSWORD 'change-me';
CREATE DATABASE certledger OWNER certledger;
\connect certledger
-- The log's append-only rule is enforced by triggers the services install; a database
-- owner can still drop triggers, so operators should keep the owner role out of day to
-- day use and review DDL (the hash chain makes any later alteration detectable).
REVOKE ALL ON DATABASE certledger FROM PUBLIC;
