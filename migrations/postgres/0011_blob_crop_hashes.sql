-- Perceptual hashes of each photo's centred crops (see the SQLite
-- migration of the same number).
CREATE TABLE blob_crop_hashes (
    sha256  TEXT   NOT NULL,
    variant BIGINT NOT NULL,
    phash   BIGINT NOT NULL,
    PRIMARY KEY (sha256, variant)
);
UPDATE blobs SET analyzed_at = NULL WHERE phash IS NOT NULL;
