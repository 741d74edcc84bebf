-- Analysis leases and the hash sequence (see the SQLite migration of the
-- same number).
ALTER TABLE blobs ADD COLUMN analysis_owner TEXT;
ALTER TABLE blobs ADD COLUMN analysis_lease_until TEXT;
ALTER TABLE blobs ADD COLUMN hash_seq BIGINT;
CREATE INDEX blobs_hash_seq ON blobs(hash_seq);
