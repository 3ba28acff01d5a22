-- Version 2, upgrading version 1: every message belongs to a room, or later
-- to a private conversation (a key in the same column, so no syntax rule
-- here). The messages of a version 1 database were all in the one chat,
-- now the room "lobby". ADD COLUMN with a default does not rewrite rows.
ALTER TABLE messages ADD COLUMN room TEXT NOT NULL DEFAULT 'lobby';
-- The window of a room and paging back through it: newest first by id, so
-- a login's window and each page cost O(limit), not O(messages).
CREATE INDEX messages_by_room ON messages (room, id);
