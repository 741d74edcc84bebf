-- The zone offset (seconds east of UTC) of a visit's device_time.
ALTER TABLE visits ADD COLUMN device_tz_offset BIGINT;
