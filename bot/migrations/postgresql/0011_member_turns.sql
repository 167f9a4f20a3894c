-- PostgreSQL twin of ../0011_member_turns.sql.
CREATE TABLE member_turns (
    user_id     BIGINT PRIMARY KEY,
    turn        BIGINT NOT NULL
);
