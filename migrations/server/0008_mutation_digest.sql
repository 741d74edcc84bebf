-- A digest (SHA-256, hex) of each applied mutation in canonical JSON
-- (keys sorted, no insignificant space), so that a sequence number pushed
-- again with different content is told apart from a replay of the same
-- mutation: the replay gets the stored answer, the other the error
-- sequence_reused (a device restored from a backup hands out numbers the
-- server already applied). Rows applied before this version have none and
-- count as matching.
ALTER TABLE mutation_results ADD COLUMN digest TEXT;
