-- PostgreSQL twin of ../0006_backend_job.sql.
ALTER TABLE jobs RENAME COLUMN runpod_id TO backend_id;
ALTER TABLE jobs ADD COLUMN endpoint TEXT NOT NULL DEFAULT 'default';
DROP INDEX jobs_by_runpod_id;
CREATE UNIQUE INDEX jobs_by_backend_id ON jobs (endpoint, backend_id) WHERE backend_id IS NOT NULL;
