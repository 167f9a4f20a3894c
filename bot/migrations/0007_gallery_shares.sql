-- The channel results are shared to (NULL: no gallery), set by moderators with /settings gallery.
ALTER TABLE guild_settings ADD COLUMN gallery_channel_id INTEGER;

-- One row per image shared to a gallery: an image is shared once, ever. A row whose message_id
-- is still NULL is a share being posted; a removed share keeps its row, so it is not shared again.
CREATE TABLE gallery_shares (
    id              INTEGER PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    image_index     INTEGER NOT NULL,
    shared_by       INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    message_id      INTEGER,
    shared_at       REAL NOT NULL,
    removed_by      INTEGER,
    removed_at      REAL,
    UNIQUE (job_id, image_index)
);
