-- Proof of possession (PostgreSQL): which devices hold which blobs, and
-- whether a visit's link to a blob is held.
CREATE TABLE blob_holders (
    sha256    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    since     TEXT NOT NULL,
    PRIMARY KEY (sha256, device_id)
);

ALTER TABLE visit_evidence ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
UPDATE visit_evidence SET held = 1;
INSERT INTO blob_holders(sha256, device_id, since)
    SELECT DISTINCT ve.sha256, v.device_id, v.server_time
    FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id JOIN blobs b ON b.sha256 = ve.sha256
    ON CONFLICT DO NOTHING;

-- A link pushed by a device that already holds the blob is held at once.
CREATE FUNCTION visit_evidence_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.held = 0 AND EXISTS (
        SELECT 1 FROM blob_holders h JOIN visits v ON v.device_id = h.device_id
        WHERE v.id = NEW.visit_id AND h.sha256 = NEW.sha256) THEN
        NEW.held := 1;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER visit_evidence_held BEFORE INSERT ON visit_evidence
    FOR EACH ROW EXECUTE FUNCTION visit_evidence_held();
