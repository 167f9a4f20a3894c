-- A job runs on one of several endpoints of a GPU backend: its id there plus the endpoint's name.
-- Rows stored before this ran on the one endpoint there was, which keeps the name 'default'.
ALTER TABLE jobs RENAME COLUMN runpod_id TO backend_id;
ALTER TABLE jobs ADD COLUMN endpoint TEXT NOT NULL DEFAULT 'default';
DROP INDEX jobs_by_runpod_id;
CREATE UNIQUE INDEX jobs_by_backend_id ON jobs (endpoint, backend_id) WHERE backend_id IS NOT NULL;
