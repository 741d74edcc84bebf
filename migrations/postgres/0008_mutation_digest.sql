-- A digest of each applied mutation in canonical JSON (see the SQLite
-- migration of the same number).
ALTER TABLE mutation_results ADD COLUMN digest TEXT;
