-- Which bot process carries each unfinished job forward, until when. Only PostgreSQL, where several
-- processes share the jobs, writes here; SQLite is one process and keeps the table for one schema.
CREATE TABLE job_leases (
    job_id      INTEGER PRIMARY KEY REFERENCES jobs (id),
    owner       TEXT NOT NULL,
    taken_at    REAL NOT NULL,
    expires_at  REAL NOT NULL
);

CREATE INDEX job_leases_by_owner ON job_leases (owner);
