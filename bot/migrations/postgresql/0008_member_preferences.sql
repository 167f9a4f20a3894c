-- PostgreSQL twin of ../0008_member_preferences.sql.
CREATE TABLE member_preferences (
    user_id     BIGINT PRIMARY KEY,
    aspect      TEXT,
    negative    TEXT,
    count       BIGINT CHECK (count IS NULL OR count BETWEEN 1 AND 4),
    style       TEXT,
    ping        BIGINT CHECK (ping IS NULL OR ping IN (0, 1)),
    dm          BIGINT CHECK (dm IS NULL OR dm IN (0, 1)),
    updated_at  DOUBLE PRECISION NOT NULL
);

ALTER TABLE guild_settings ADD COLUMN ping_after BIGINT;
