-- Every job is a row from the moment it is accepted; every state change is an event row.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    guild_id        INTEGER,                -- NULL for jobs started from the command line
    channel_id      INTEGER,                -- where the job's progress message lives
    message_id      INTEGER,
    user_id         INTEGER NOT NULL,
    state           TEXT NOT NULL,
    template        TEXT NOT NULL,
    request         TEXT NOT NULL,          -- the GenerationRequest, as JSON
    workflow        TEXT NOT NULL,          -- the rendered ComfyUI API workflow, as JSON
    cost            INTEGER NOT NULL DEFAULT 0,
    filesize_limit  INTEGER,                -- the upload limit the interaction carried
    runpod_id       TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    submitted_at    REAL,
    started_at      REAL,
    finished_at     REAL,
    delay_ms        INTEGER,
    execution_ms    INTEGER,
    error           TEXT,                   -- raw backend text: for the log and operators only
    failure         TEXT,                   -- the sentence the member is shown
    delivered_at    REAL
);

CREATE INDEX jobs_active ON jobs (state)
    WHERE state NOT IN ('done', 'failed', 'cancelled', 'timed_out', 'expired');
CREATE INDEX jobs_by_member ON jobs (guild_id, user_id, created_at);
CREATE UNIQUE INDEX jobs_by_runpod_id ON jobs (runpod_id) WHERE runpod_id IS NOT NULL;

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    at          REAL NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    detail      TEXT
);

CREATE INDEX job_events_by_job ON job_events (job_id, id);

CREATE TRIGGER job_events_append_only_update BEFORE UPDATE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'job_events is append-only');
END;

CREATE TRIGGER job_events_append_only_delete BEFORE DELETE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'job_events is append-only');
END;

-- Images sent to the worker in input.images (img2img, upscale); kept until the job ends.
CREATE TABLE job_inputs (
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, name)
);

-- Images fetched from RunPod, kept until they are delivered (results expire at RunPod).
CREATE TABLE job_outputs (
    job_id    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,
    filename  TEXT NOT NULL,
    mime      TEXT NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (job_id, idx)
);
