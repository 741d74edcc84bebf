-- The worker's stated reason for a visit without a good GPS fix.
ALTER TABLE visits ADD COLUMN gps_reason TEXT;
