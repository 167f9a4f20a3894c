-- PostgreSQL twin of ../0005_audit_facts.sql.
ALTER TABLE audit_log ADD COLUMN facts TEXT;
