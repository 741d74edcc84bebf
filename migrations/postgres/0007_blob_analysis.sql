-- Blobs are analysed after their upload is answered; NULL: not yet.
ALTER TABLE blobs ADD COLUMN analyzed_at TEXT;
UPDATE blobs SET analyzed_at = stored_at;
CREATE INDEX blobs_unanalyzed ON blobs(stored_at) WHERE analyzed_at IS NULL;
