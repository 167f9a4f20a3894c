-- When each member last had a queued job sent, as a rising turn number: several processes claim
-- the globally next job in member rotation from here (PostgreSQL). SQLite is one process whose
-- fair queue keeps the rotation in memory; it keeps the table for one schema.
CREATE TABLE member_turns (
    user_id     INTEGER PRIMARY KEY,
    turn        INTEGER NOT NULL
);
