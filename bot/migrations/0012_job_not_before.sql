-- The wall-clock time before which a queued job must not be sent again: a job RunPod refused
-- for a passing reason waits out its backoff. Stored, so that on PostgreSQL no other process
-- claims it at once; NULL for a job that may go at any time.
ALTER TABLE jobs ADD COLUMN not_before REAL;
