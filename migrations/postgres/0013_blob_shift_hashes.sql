-- Perceptual hashes of each photo's off-centre crops, stored in
-- blob_crop_hashes from variant 3 on (see the SQLite migration of the same
-- number). Photos analysed before are read again.
UPDATE blobs SET analyzed_at = NULL WHERE phash IS NOT NULL;
