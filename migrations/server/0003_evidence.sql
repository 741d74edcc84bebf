-- Evidence: verified blobs and what was read from them, resumable uploads
-- in progress (tus), and the flags that the checks on arrival raise.

-- A row here means the blob is present: its bytes were re-hashed by the
-- server and stored in the blob store under sha256. Written only after the
-- blob store accepted the bytes, so a row never names a missing blob.
CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,        -- sniffed from the bytes, else declared
    stored_at  TEXT NOT NULL,
    -- Capture time from EXIF: RFC 3339 with an offset when the photo says
    -- which zone it was taken in (OffsetTimeOriginal or GPS time), else a
    -- floating local time "2006-01-02T15:04:05". NULL: none.
    exif_time  TEXT,
    exif_lon   REAL,
    exif_lat   REAL,
    phash      INTEGER,              -- 64-bit perceptual hash (goimagehash pHash), as a signed integer
    width      INTEGER,
    height     INTEGER
) STRICT;
CREATE INDEX blobs_phash ON blobs(phash) WHERE phash IS NOT NULL;

-- Resumable uploads (tus 1.0). The bytes received so far live in a partial
-- file in the upload folder named after id; "offset" is the last offset
-- confirmed to the database (the partial file is the authority after a
-- crash). state: active (receiving), done (verified and stored; the row
-- stays until expires_at so that a client can still ask for its offset).
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,     -- random, 32 hex digits
    device_id  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    length     INTEGER NOT NULL,
    "offset"   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',  -- Upload-Metadata as a JSON object
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'done'))
) STRICT;
CREATE INDEX uploads_device ON uploads(device_id, state);
CREATE INDEX uploads_expires ON uploads(expires_at);

-- Flags raised by the evidence checks (see server/evidence). sha256 is ''
-- for flags about the visit itself (its point outside its place, poor GPS
-- accuracy). Flags point things out for review; they never reject.
CREATE TABLE evidence_flags (
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    sha256     TEXT NOT NULL,
    flag       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (visit_id, sha256, flag)
) STRICT, WITHOUT ROWID;
CREATE INDEX evidence_flags_flag ON evidence_flags(flag, visit_id);
CREATE INDEX evidence_flags_sha ON evidence_flags(sha256);
