-- PostgreSQL twin of ../0003_guild_settings.sql.
CREATE TABLE guild_settings (
    guild_id            BIGINT PRIMARY KEY,
    moderator_role_id   BIGINT,
    nsfw_policy         TEXT CHECK (nsfw_policy IN ('safe_tags', 'refuse', 'spoiler', 'off')),
    allowed_channels    TEXT,
    default_workflow    TEXT,
    default_steps       BIGINT,
    default_cfg         DOUBLE PRECISION,
    max_steps           BIGINT,
    max_count           BIGINT,
    max_pixels          BIGINT,
    updated_at          DOUBLE PRECISION NOT NULL
);
