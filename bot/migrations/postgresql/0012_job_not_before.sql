-- PostgreSQL twin of ../0012_job_not_before.sql.
ALTER TABLE jobs ADD COLUMN not_before DOUBLE PRECISION;
