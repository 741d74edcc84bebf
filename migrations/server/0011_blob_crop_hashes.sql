-- Perceptual hashes of each photo's centred crops (evidence.CropFractions:
-- variant 1 is the 90% crop, 2 the 80% crop), so that a reused photo
-- cropped by up to about 20% is still found near its original. The whole
-- picture's hash stays in blobs.phash.
CREATE TABLE blob_crop_hashes (
    sha256  TEXT    NOT NULL,
    variant INTEGER NOT NULL,
    phash   INTEGER NOT NULL,
    PRIMARY KEY (sha256, variant)
) STRICT, WITHOUT ROWID;

-- Photos analysed before have no crop hashes: the analysis worker reads
-- them again (it re-runs their checks too).
UPDATE blobs SET analyzed_at = NULL WHERE phash IS NOT NULL;
