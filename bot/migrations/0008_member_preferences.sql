-- Each member's own defaults for /imagine, set with /prefer; NULL means "no preference" (the
-- bot's default applies). One row per person, wherever they make images.
CREATE TABLE member_preferences (
    user_id     INTEGER PRIMARY KEY,
    aspect      TEXT,
    negative    TEXT,
    count       INTEGER CHECK (count IS NULL OR count BETWEEN 1 AND 4),
    style       TEXT,
    ping        INTEGER CHECK (ping IS NULL OR ping IN (0, 1)),  -- pinged when a slow result lands
    dm          INTEGER CHECK (dm IS NULL OR dm IN (0, 1)),      -- results sent by DM
    updated_at  REAL NOT NULL
);

-- After how many seconds of waiting a finished job pings its member (NULL: the bot's 30 s).
ALTER TABLE guild_settings ADD COLUMN ping_after INTEGER;
