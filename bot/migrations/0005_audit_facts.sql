-- What a moderator changed, as values (JSON), so that whoever shows the trail writes the words,
-- mentions and times. Rows written before keep their sentence in `detail`; newer rows leave it
-- empty.
ALTER TABLE audit_log ADD COLUMN facts TEXT;
