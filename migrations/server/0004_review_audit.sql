-- Review history of visits and the append-only audit log.

CREATE TABLE review_events (
    id          INTEGER PRIMARY KEY,
    visit_id    TEXT NOT NULL REFERENCES visits(id),
    step        INTEGER NOT NULL,
    step_name   TEXT NOT NULL DEFAULT '',
    action      TEXT NOT NULL CHECK (action IN ('approve', 'rework', 'reject')),
    reason      TEXT NOT NULL DEFAULT '',
    user_id     INTEGER REFERENCES users(id),
    created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX review_events_visit ON review_events(visit_id, id);

-- Every change to a household, a visit's review state, a place, a user, a
-- device or a form, and every export: who, when, from which device or
-- session, before and after.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor_user  INTEGER,
    actor_name  TEXT NOT NULL DEFAULT '',
    device_id   TEXT NOT NULL DEFAULT '',
    session     TEXT NOT NULL DEFAULT '',   -- a short hash of the session, never the token
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    place_code  TEXT NOT NULL DEFAULT '',
    before      TEXT,
    after       TEXT
) STRICT;
CREATE INDEX audit_entity ON audit_events(entity_type, entity_id, id);
CREATE INDEX audit_place ON audit_events(place_code, id);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
