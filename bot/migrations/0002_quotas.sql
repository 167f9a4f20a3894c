-- Credits as a ledger: one hold per job, settled exactly once (captured or refunded).
CREATE TABLE quota_holds (
    job_id          INTEGER PRIMARY KEY REFERENCES jobs (id),
    guild_id        INTEGER,
    user_id         INTEGER NOT NULL,
    credits         INTEGER NOT NULL,       -- everything held for the job
    bonus_credits   INTEGER NOT NULL,       -- the part taken from granted bonus credits
    usd_estimate    REAL NOT NULL,
    usd_actual      REAL,
    gpu_seconds     REAL,
    state           TEXT NOT NULL CHECK (state IN ('held', 'captured', 'refunded')),
    created_at      REAL NOT NULL,
    settled_at      REAL
);

CREATE INDEX quota_holds_by_member ON quota_holds (guild_id, user_id, created_at);
CREATE INDEX quota_holds_by_time ON quota_holds (created_at);

-- Allowances: a member override, a role tier, or the server default (target_id 0).
CREATE TABLE quota_limits (
    guild_id    INTEGER NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('member', 'role', 'default')),
    target_id   INTEGER NOT NULL,
    credits     INTEGER NOT NULL CHECK (credits >= 0),
    PRIMARY KEY (guild_id, scope, target_id)
);

CREATE TABLE quota_grants (
    id              INTEGER PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    credits         INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    moderator_id    INTEGER NOT NULL,
    created_at      REAL NOT NULL
);

CREATE INDEX quota_grants_by_member ON quota_grants (guild_id, user_id);

-- A reset makes the current period count only what is spent after it.
CREATE TABLE quota_resets (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE quota_blocks (
    guild_id        INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    moderator_id    INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE quota_budgets (
    guild_id    INTEGER PRIMARY KEY,
    daily_usd   REAL NOT NULL CHECK (daily_usd > 0)
);

-- Every moderator action, append-only: who changed what, when and why.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    moderator_id    INTEGER NOT NULL,
    action          TEXT NOT NULL,
    target_id       INTEGER,
    detail          TEXT NOT NULL,
    reason          TEXT,
    at              REAL NOT NULL
);

CREATE INDEX audit_log_by_guild ON audit_log (guild_id, id);

CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
