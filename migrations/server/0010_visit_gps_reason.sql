-- The worker's stated reason for saving a visit without a GPS fix within
-- the form's accuracy limit (syncproto Visit.GPSReason, e.g. "山谷里没有
-- 信号"). NULL: none given (and every visit from before this version).
ALTER TABLE visits ADD COLUMN gps_reason TEXT;
