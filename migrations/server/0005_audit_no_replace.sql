-- INSERT OR REPLACE would rewrite an audit row without firing the delete
-- trigger (recursive_triggers is off): refuse any insert that names an id
-- already present.
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit_events
WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
