-- Several fieldsync instances may share one database (PostgreSQL), so the
-- analysis queue and the near-duplicate index must not be per process.
--
-- analysis_owner and analysis_lease_until: an instance's analysis worker
-- claims a blob (its instance id, and until when) before it reads the
-- photo; another instance takes the claim over once the lease has passed
-- (the owner died). A failed analysis leaves no owner and a lease_until in
-- the future: the time before which nobody retries it. Recording the
-- analysis clears both.
--
-- hash_seq: a number that grows with every write of a blob's perceptual
-- hashes, in commit order (writes are serialised), so that each instance
-- adds to its in-memory near-duplicate index the hashes that other
-- instances recorded since it last looked. NULL: written before this
-- version (loaded when an instance starts).
ALTER TABLE blobs ADD COLUMN analysis_owner TEXT;
ALTER TABLE blobs ADD COLUMN analysis_lease_until TEXT;
ALTER TABLE blobs ADD COLUMN hash_seq INTEGER;
CREATE INDEX blobs_hash_seq ON blobs(hash_seq);
