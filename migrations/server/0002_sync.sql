-- Sync: households, visits, the commit-ordered change log, per-device
-- sequence state and stored mutation results, conflicts and tasks.

CREATE TABLE households (
    id          TEXT PRIMARY KEY,
    place_code  TEXT NOT NULL REFERENCES places(code),
    fields      TEXT NOT NULL DEFAULT '{}',  -- field name -> JSON value
    -- field_meta: field name -> {"h": hlc, "v": version, "d": device}
    field_meta  TEXT NOT NULL DEFAULT '{}',
    version     INTEGER NOT NULL,            -- change-log seq of the last change
    lon REAL, lat REAL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    created_by_device TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
CREATE INDEX households_place ON households(place_code, id);

CREATE TABLE visits (
    id            TEXT PRIMARY KEY,
    household_id  TEXT NOT NULL REFERENCES households(id),
    place_code    TEXT NOT NULL REFERENCES places(code),
    device_id     TEXT REFERENCES devices(id),
    user_id       INTEGER REFERENCES users(id),
    form_id       TEXT NOT NULL,
    form_version  INTEGER NOT NULL,
    answers       TEXT NOT NULL,
    lon REAL, lat REAL,
    accuracy_m    REAL,
    device_time   TEXT NOT NULL,
    server_time   TEXT NOT NULL,
    hlc           TEXT NOT NULL,
    corrects_visit_id TEXT,
    review_state  TEXT NOT NULL DEFAULT 'submitted'
        CHECK (review_state IN ('submitted', 'approved', 'needs_rework', 'rejected')),
    review_step   INTEGER NOT NULL DEFAULT 0,
    content_hash  TEXT NOT NULL,   -- of the pushed visit, to tell a replay from a clashing id
    FOREIGN KEY (form_id, form_version) REFERENCES forms(id, version)
) STRICT;
CREATE INDEX visits_household ON visits(household_id, server_time);
CREATE INDEX visits_place ON visits(place_code, server_time);
CREATE INDEX visits_review ON visits(review_state, place_code);

CREATE TABLE visit_evidence (
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    slot       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (visit_id, slot, sha256)
) STRICT, WITHOUT ROWID;
CREATE INDEX visit_evidence_sha ON visit_evidence(sha256);

-- The change log. seq is assigned inside the single writer's transaction;
-- SQLite holds its write lock from the first write to the commit, so a
-- change that commits later always has a larger seq: no out-of-order gaps.
-- place_code '' marks changes every device receives (forms).
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    place_code  TEXT NOT NULL,
    -- 'put': the entity changed under place_code;
    -- 'moved_out': the entity left place_code (it moved or was deleted).
    kind        TEXT NOT NULL CHECK (kind IN ('put', 'moved_out')),
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX changes_place ON changes(place_code, seq);

CREATE TABLE device_sync (
    device_id        TEXT PRIMARY KEY REFERENCES devices(id),
    last_seq         INTEGER NOT NULL DEFAULT 0,
    last_push_at     TEXT,
    last_pull_at     TEXT,
    last_sync_ok_at  TEXT,
    health           TEXT,       -- last syncproto.OutboxHealth as JSON
    health_at        TEXT,
    app_version      TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE mutation_results (
    device_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    result    TEXT NOT NULL,     -- syncproto.MutationResult as JSON
    body      TEXT NOT NULL,     -- the mutation as pushed: nothing a device sent is lost
    applied_at TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE conflicts (
    id             TEXT PRIMARY KEY,
    household_id   TEXT NOT NULL REFERENCES households(id),
    place_code     TEXT NOT NULL,
    field          TEXT NOT NULL,
    kept_value     TEXT,
    losing_value   TEXT,
    losing_device  TEXT,
    losing_user_id INTEGER,
    losing_hlc     TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('auto_resolved', 'open', 'resolved')),
    sensitive      INTEGER NOT NULL DEFAULT 0,
    resolution     TEXT,
    resolved_by    INTEGER,
    resolved_at    TEXT,
    created_at     TEXT NOT NULL
) STRICT;
CREATE INDEX conflicts_place ON conflicts(place_code, state);
CREATE INDEX conflicts_household ON conflicts(household_id);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    visit_id     TEXT NOT NULL REFERENCES visits(id),
    household_id TEXT NOT NULL,
    place_code   TEXT NOT NULL,
    user_id      INTEGER,
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('open', 'done')),
    closed_by_visit TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;
CREATE INDEX tasks_place ON tasks(place_code, state);
