-- Foundation: server metadata, the place tree, users, sessions, devices,
-- enrollment codes and versioned forms.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE places (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('county', 'township', 'village', 'group')),
    parent_code TEXT REFERENCES places(code),
    -- path is the materialised ancestry "/county/township/village/group/",
    -- so a subtree is one prefix range.
    path        TEXT NOT NULL UNIQUE,
    boundary    TEXT,            -- GeoJSON geometry (Polygon or MultiPolygon)
    min_lon REAL, min_lat REAL, max_lon REAL, max_lat REAL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX places_parent ON places(parent_code);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('admin', 'supervisor', 'field_worker')),
    password_hash TEXT NOT NULL DEFAULT '',
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

CREATE TABLE user_places (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    place_code TEXT NOT NULL REFERENCES places(code),
    PRIMARY KEY (user_id, place_code)
) STRICT, WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;

CREATE TABLE enrollment_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_by  INTEGER REFERENCES users(id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    device_id   TEXT
) STRICT;

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL DEFAULT '',
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_seen_at TEXT
) STRICT;
CREATE INDEX devices_user ON devices(user_id);

CREATE TABLE forms (
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    title        TEXT NOT NULL,
    definition   TEXT NOT NULL,   -- syncproto.FormDef as JSON
    published_at TEXT NOT NULL,
    published_by INTEGER REFERENCES users(id),
    PRIMARY KEY (id, version)
) STRICT;

-- Published form versions are immutable.
CREATE TRIGGER forms_immutable BEFORE UPDATE ON forms
BEGIN
    SELECT RAISE(ABORT, 'published form versions are immutable');
END;
