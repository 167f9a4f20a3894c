-- PostgreSQL twin of ../0010_styles_and_words.sql: a server's blocked words and workflows turned
-- off, `refuse` renamed `age_restricted_only`, and the styles moderators add.
ALTER TABLE guild_settings DROP CONSTRAINT guild_settings_nsfw_policy_check;
UPDATE guild_settings SET nsfw_policy = 'age_restricted_only' WHERE nsfw_policy = 'refuse';
ALTER TABLE guild_settings ADD CONSTRAINT guild_settings_nsfw_policy_check
    CHECK (nsfw_policy IN ('safe_tags', 'age_restricted_only', 'spoiler', 'off'));
ALTER TABLE guild_settings ADD COLUMN blocked_words TEXT;
ALTER TABLE guild_settings ADD COLUMN disabled_workflows TEXT;

CREATE TABLE guild_styles (
    guild_id    BIGINT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_by  BIGINT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, name)
);
