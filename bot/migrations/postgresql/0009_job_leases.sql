-- PostgreSQL twin of ../0009_job_leases.sql.
CREATE TABLE job_leases (
    job_id      BIGINT PRIMARY KEY REFERENCES jobs (id),
    owner       TEXT NOT NULL,
    taken_at    DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);

CREATE INDEX job_leases_by_owner ON job_leases (owner);
