-- Keep an event's row in the table's own page up to 8 KB: a CertificateIssued payload
-- (the certificate and its chain, about 2.4 KB, incompressible) made its row pass the
-- default 2 KB target, so every one was first put through pglz, then moved into the
-- TOAST table (two chunks and their index entries), and every reader of the log fetched
-- it back from there. Rows already written stay as they are.
ALTER TABLE events SET (toast_tuple_target = 8160);
