-- Blobs are analysed (EXIF, size, perceptual hash) and checked after the
-- upload that brought them is answered, by a background worker of the
-- upload handler. analyzed_at NULL: not yet; the worker finds such rows
-- again after a restart. Blobs recorded before this version were analysed
-- on arrival.
ALTER TABLE blobs ADD COLUMN analyzed_at TEXT;
UPDATE blobs SET analyzed_at = stored_at;
CREATE INDEX blobs_unanalyzed ON blobs(stored_at) WHERE analyzed_at IS NULL;
