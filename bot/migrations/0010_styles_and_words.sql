-- Per-server content choices: moderators' own blocked words and the workflows they turned off
-- (JSON lists), and the NSFW mode `refuse` renamed to what it does, `age_restricted_only`.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt; stored rows keep
-- every value, a stored `refuse` becomes `age_restricted_only`.
CREATE TABLE guild_settings_new (
    guild_id            INTEGER PRIMARY KEY,
    moderator_role_id   INTEGER,
    nsfw_policy         TEXT CHECK (
        nsfw_policy IN ('safe_tags', 'age_restricted_only', 'spoiler', 'off')
    ),
    allowed_channels    TEXT,           -- JSON list of channel ids; NULL = every channel
    default_workflow    TEXT,
    default_steps       INTEGER,
    default_cfg         REAL,
    max_steps           INTEGER,
    max_count           INTEGER,
    max_pixels          INTEGER,
    gallery_channel_id  INTEGER,
    ping_after          INTEGER,
    blocked_words       TEXT,           -- JSON list of words, besides the operator's
    disabled_workflows  TEXT,           -- JSON list of workflow names members cannot use here
    updated_at          REAL NOT NULL
);

INSERT INTO guild_settings_new (
    guild_id, moderator_role_id, nsfw_policy, allowed_channels, default_workflow, default_steps,
    default_cfg, max_steps, max_count, max_pixels, gallery_channel_id, ping_after, updated_at
)
SELECT
    guild_id, moderator_role_id,
    CASE nsfw_policy WHEN 'refuse' THEN 'age_restricted_only' ELSE nsfw_policy END,
    allowed_channels, default_workflow, default_steps, default_cfg, max_steps, max_count,
    max_pixels, gallery_channel_id, ping_after, updated_at
FROM guild_settings;

DROP TABLE guild_settings;

ALTER TABLE guild_settings_new RENAME TO guild_settings;

-- Styles moderators added for their server; the operator's live in files (STYLES_DIR).
CREATE TABLE guild_styles (
    guild_id    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,          -- JSON: prompt, negative, loras, workflow, defaults
    created_by  INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (guild_id, name)
);
