-- The zone offset (seconds east of UTC) the device wrote in a visit's
-- device_time, so the evidence checks know the visit's local day without
-- reading the pushed body back. NULL: the device sent UTC ("Z").
ALTER TABLE visits ADD COLUMN device_tz_offset INTEGER;
