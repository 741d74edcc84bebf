-- Sync (PostgreSQL): households, visits, the change log, per-device
-- sequence state and stored results, conflicts and tasks. JSON columns
-- that queries read into are json (text kept as written), so that
-- "fields ->> 'head_name'" is the same SQL on both engines.

CREATE TABLE households (
    id          TEXT PRIMARY KEY,
    place_code  TEXT NOT NULL REFERENCES places(code),
    fields      JSON NOT NULL DEFAULT '{}',
    field_meta  JSON NOT NULL DEFAULT '{}',
    version     BIGINT NOT NULL,
    lon DOUBLE PRECISION, lat DOUBLE PRECISION,
    deleted     BIGINT NOT NULL DEFAULT 0,
    created_by_device TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX households_place ON households(place_code, id);

CREATE TABLE visits (
    id            TEXT PRIMARY KEY,
    household_id  TEXT NOT NULL REFERENCES households(id),
    place_code    TEXT NOT NULL REFERENCES places(code),
    device_id     TEXT REFERENCES devices(id),
    user_id       BIGINT REFERENCES users(id),
    form_id       TEXT NOT NULL,
    form_version  BIGINT NOT NULL,
    answers       JSON NOT NULL,
    lon DOUBLE PRECISION, lat DOUBLE PRECISION,
    accuracy_m    DOUBLE PRECISION,
    device_time   TEXT NOT NULL,
    server_time   TEXT NOT NULL,
    hlc           TEXT NOT NULL,
    corrects_visit_id TEXT,
    review_state  TEXT NOT NULL DEFAULT 'submitted'
        CHECK (review_state IN ('submitted', 'approved', 'needs_rework', 'rejected')),
    review_step   BIGINT NOT NULL DEFAULT 0,
    content_hash  TEXT NOT NULL,
    FOREIGN KEY (form_id, form_version) REFERENCES forms(id, version)
);
CREATE INDEX visits_household ON visits(household_id, server_time);
CREATE INDEX visits_place ON visits(place_code, server_time);
CREATE INDEX visits_review ON visits(review_state, place_code);

CREATE TABLE visit_evidence (
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    slot       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (visit_id, slot, sha256)
);
CREATE INDEX visit_evidence_sha ON visit_evidence(sha256);

-- The change log. seq is not an identity: writers take it from sync_head
-- under its row lock (see 0001), so seqs are assigned in commit order.
CREATE TABLE changes (
    seq         BIGINT PRIMARY KEY,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    place_code  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('put', 'moved_out')),
    created_at  TEXT NOT NULL
);
CREATE INDEX changes_place ON changes(place_code, seq);

CREATE TABLE device_sync (
    device_id        TEXT PRIMARY KEY REFERENCES devices(id),
    last_seq         BIGINT NOT NULL DEFAULT 0,
    last_push_at     TEXT,
    last_pull_at     TEXT,
    last_sync_ok_at  TEXT,
    health           TEXT,
    health_at        TEXT,
    app_version      TEXT NOT NULL DEFAULT ''
);

CREATE TABLE mutation_results (
    device_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    result    JSON NOT NULL,
    body      JSON NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);

CREATE TABLE conflicts (
    id             TEXT PRIMARY KEY,
    household_id   TEXT NOT NULL REFERENCES households(id),
    place_code     TEXT NOT NULL,
    field          TEXT NOT NULL,
    kept_value     TEXT,
    losing_value   TEXT,
    losing_device  TEXT,
    losing_user_id BIGINT,
    losing_hlc     TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('auto_resolved', 'open', 'resolved')),
    sensitive      BIGINT NOT NULL DEFAULT 0,
    resolution     TEXT,
    resolved_by    BIGINT,
    resolved_at    TEXT,
    created_at     TEXT NOT NULL
);
CREATE INDEX conflicts_place ON conflicts(place_code, state);
CREATE INDEX conflicts_household ON conflicts(household_id);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    visit_id     TEXT NOT NULL REFERENCES visits(id),
    household_id TEXT NOT NULL,
    place_code   TEXT NOT NULL,
    user_id      BIGINT,
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('open', 'done')),
    closed_by_visit TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX tasks_place ON tasks(place_code, state);
