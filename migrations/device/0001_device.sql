-- The device's own database: enrollment, the outbox of mutations, the local
-- copy of the worker's scope, the upload queue and the saved cursor.
--
-- Times are UTC text in a fixed-width RFC 3339 layout
-- (2006-01-02T15:04:05.000000000Z) so that they sort as strings.

-- device_meta holds single values: device_id, token, username, server_url,
-- cursor (the last pull cursor, saved with the ops it covers), last_seq (the
-- last sequence number handed out; never reused), hlc (the last hybrid
-- logical clock value issued or observed; never goes backwards),
-- last_sync_at.
CREATE TABLE device_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Outbox: every local change is a mutation with the next sequence number,
-- written in the same transaction as its local effect. Rows leave the
-- outbox only in the transaction that saves the server's result for them.
-- body is the exact syncproto.Mutation JSON sent on every (re)try.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    entity_id    TEXT NOT NULL,             -- visit or household id
    household_id TEXT NOT NULL DEFAULT '',  -- household the mutation concerns
    body         TEXT NOT NULL,
    created_at   TEXT NOT NULL
) STRICT;
CREATE INDEX outbox_household ON outbox(household_id, seq);

-- Results of mutations the server answered. Rejections are shown to the
-- worker until dismissed. overlay marks an applied household change whose
-- effect the device has not yet seen in a pulled copy of the household: the
-- local view keeps showing it until a pull brings version >= version.
CREATE TABLE results (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    entity_id    TEXT NOT NULL DEFAULT '',
    household_id TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL,
    code         TEXT NOT NULL DEFAULT '',
    message      TEXT NOT NULL DEFAULT '',
    version      INTEGER NOT NULL DEFAULT 0,
    conflicts    INTEGER NOT NULL DEFAULT 0,
    overlay      INTEGER NOT NULL DEFAULT 0,
    dismissed    INTEGER NOT NULL DEFAULT 0,
    body         TEXT NOT NULL,
    queued_at    TEXT NOT NULL,
    answered_at  TEXT NOT NULL
) STRICT;
CREATE INDEX results_overlay ON results(household_id, seq) WHERE overlay = 1;
CREATE INDEX results_rejected ON results(seq) WHERE status = 'rejected' AND dismissed = 0;

CREATE TABLE places (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    level       TEXT NOT NULL,
    parent_code TEXT NOT NULL DEFAULT '',
    boundary    TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX places_parent ON places(parent_code);

CREATE TABLE forms (
    id         TEXT NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (id, version)
) STRICT;

-- households holds the server's copy (base_*) and the local view
-- (place_code, fields, deleted): base plus applied-but-not-yet-pulled
-- changes (results.overlay) plus the unpushed outbox mutations of the
-- household, recomputed whenever any of the three changes. has_base is 0
-- for a household created on this device that the server has not
-- acknowledged yet (local_only = 1).
CREATE TABLE households (
    id           TEXT PRIMARY KEY,
    place_code   TEXT NOT NULL,
    fields       TEXT NOT NULL DEFAULT '{}',
    deleted      INTEGER NOT NULL DEFAULT 0,
    has_base     INTEGER NOT NULL DEFAULT 0,
    base_place   TEXT NOT NULL DEFAULT '',
    base_version INTEGER NOT NULL DEFAULT 0,
    base_fields  TEXT NOT NULL DEFAULT '{}',
    local_only   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX households_place ON households(place_code);
CREATE INDEX households_base_place ON households(base_place) WHERE has_base = 1;

-- visits: the server's visits in scope and this device's own visits
-- (local_only = 1 until the server acknowledges them).
CREATE TABLE visits (
    id           TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    place_code   TEXT NOT NULL DEFAULT '',
    device_time  TEXT NOT NULL DEFAULT '',
    body         TEXT NOT NULL,             -- syncproto.Visit JSON
    review_state TEXT NOT NULL DEFAULT '',
    local_only   INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX visits_household ON visits(household_id);
CREATE INDEX visits_place ON visits(place_code);

CREATE TABLE conflicts (
    id           TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    place_code   TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT '',
    body         TEXT NOT NULL              -- syncproto.Conflict JSON
) STRICT;
CREATE INDEX conflicts_place ON conflicts(place_code);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    household_id TEXT NOT NULL,
    visit_id     TEXT NOT NULL,
    place_code   TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL,
    body         TEXT NOT NULL              -- syncproto.Task JSON
) STRICT;
CREATE INDEX tasks_place ON tasks(place_code);

-- Evidence files waiting to reach the server, with the resumable (tus)
-- upload URL and the offset the server confirmed. Filled by the evidence
-- queue (a later issue); Pending() and the push health already count it.
CREATE TABLE uploads (
    sha256     TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    upload_url TEXT NOT NULL DEFAULT '',
    offset     INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'pending',   -- pending, done
    created_at TEXT NOT NULL
) STRICT;
