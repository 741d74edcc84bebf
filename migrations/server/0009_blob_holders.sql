-- Proof of possession: knowing a blob's hash is not enough to see it.
-- A device holds a blob once it sent the bytes and the server verified
-- them, or once the server told it the blob was already stored because a
-- held link in its own scope names it (it could download it then).
CREATE TABLE blob_holders (
    sha256    TEXT NOT NULL,
    device_id TEXT NOT NULL,
    since     TEXT NOT NULL,
    PRIMARY KEY (sha256, device_id)
) STRICT, WITHOUT ROWID;

-- A visit's link to a blob counts (fills its slot, lets those who see the
-- visit download the blob) only when held: the visit's device holds the
-- blob. Links made before this version cannot be told apart and are kept
-- as held, with their devices as holders.
ALTER TABLE visit_evidence ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
UPDATE visit_evidence SET held = 1;
INSERT OR IGNORE INTO blob_holders(sha256, device_id, since)
    SELECT DISTINCT ve.sha256, v.device_id, v.server_time
    FROM visit_evidence ve JOIN visits v ON v.id = ve.visit_id JOIN blobs b ON b.sha256 = ve.sha256;

-- A link pushed by a device that already holds the blob is held at once.
CREATE TRIGGER visit_evidence_held AFTER INSERT ON visit_evidence
WHEN NEW.held = 0 AND EXISTS (
    SELECT 1 FROM blob_holders h JOIN visits v ON v.device_id = h.device_id
    WHERE v.id = NEW.visit_id AND h.sha256 = NEW.sha256)
BEGIN
    UPDATE visit_evidence SET held = 1
    WHERE visit_id = NEW.visit_id AND slot = NEW.slot AND sha256 = NEW.sha256;
END;
