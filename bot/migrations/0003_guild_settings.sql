-- Per-server policy set by moderators with /settings; NULL means "the bot's default".
CREATE TABLE guild_settings (
    guild_id            INTEGER PRIMARY KEY,
    moderator_role_id   INTEGER,
    nsfw_policy         TEXT CHECK (nsfw_policy IN ('safe_tags', 'refuse', 'spoiler', 'off')),
    allowed_channels    TEXT,           -- JSON list of channel ids; NULL = every channel
    default_workflow    TEXT,
    default_steps       INTEGER,
    default_cfg         REAL,
    max_steps           INTEGER,
    max_count           INTEGER,
    max_pixels          INTEGER,
    updated_at          REAL NOT NULL
);
