-- PostgreSQL has no INSERT OR REPLACE: an insert naming an id already
-- present fails on the primary key, and the update and delete triggers of
-- 0004 already guard the rows. Kept so that both engines count the same
-- versions.
SELECT 1;
