-- History of the chat: one row per message response the server issued.
-- Version 1.
CREATE TABLE IF NOT EXISTS messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT    NOT NULL,
    sender    TEXT    NOT NULL,
    content   TEXT    NOT NULL
);
