-- PostgreSQL twin of ../0004_job_roles.sql.
ALTER TABLE jobs ADD COLUMN role_ids TEXT NOT NULL DEFAULT '[]';
