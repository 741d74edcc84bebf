-- Evidence (PostgreSQL): verified blobs, resumable uploads, flags.

CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    stored_at  TEXT NOT NULL,
    exif_time  TEXT,
    exif_lon   DOUBLE PRECISION,
    exif_lat   DOUBLE PRECISION,
    phash      BIGINT,
    width      BIGINT,
    height     BIGINT
);
CREATE INDEX blobs_phash ON blobs(phash) WHERE phash IS NOT NULL;

CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    length     BIGINT NOT NULL,
    "offset"   BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'done'))
);
CREATE INDEX uploads_device ON uploads(device_id, state);
CREATE INDEX uploads_expires ON uploads(expires_at);

CREATE TABLE evidence_flags (
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    sha256     TEXT NOT NULL,
    flag       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (visit_id, sha256, flag)
);
CREATE INDEX evidence_flags_flag ON evidence_flags(flag, visit_id);
CREATE INDEX evidence_flags_sha ON evidence_flags(sha256);
