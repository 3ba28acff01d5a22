"""
Back up a chat database while a server uses it:

    python -m chat.storage.backup DATABASE DEST      (or: chat-backup DATABASE DEST)

SQLite's online backup API copies the database as it was at one moment, in
one read transaction: in WAL mode a reader never blocks the server's writes,
so the server goes on serving, and the copy holds a consistent prefix of the
messages. The copy is written to a temporary file beside DEST and appears
under DEST only when complete, as a single file (rollback journal mode) that
a server can open as it is. DEST must not exist.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from typing import Iterator, List, Optional, Sequence

from chat.storage.interfaces import StoredMessage, StoreError
from chat.storage.sqlite import existing_database, upgrade


@contextlib.contextmanager
def _new_file(dest: str) -> Iterator[str]:
    """
    A temporary path beside C{dest} to write; on success it becomes C{dest}
    (never replacing a file there), on failure it is removed.
    """
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise StoreError(f"cannot write backup {dest!r}: directory {directory!r} does not exist")
    if os.path.lexists(dest):
        raise StoreError(f"cannot write backup {dest!r}: it exists (choose a new name)")
    temporary = os.path.join(directory, f".{os.path.basename(dest)}.partial-{os.getpid()}")
    try:
        yield temporary
        # link(), unlike rename(), fails if DEST appeared meanwhile.
        os.link(temporary, dest)
    except FileExistsError:
        raise StoreError(f"cannot write backup {dest!r}: it exists (choose a new name)") from None
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"cannot write backup {dest!r}: {e}".replace("\n", " ")) from e
    finally:
        for leftover in (temporary, temporary + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _count(db: sqlite3.Connection) -> int:
    (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
    return count


def backup_connection(source: sqlite3.Connection, dest: str) -> int:
    """
    Copy the database open on C{source} to the new file C{dest}; return the
    number of messages in the copy. Blocking.
    """
    with _new_file(dest) as temporary:
        copy = sqlite3.connect(temporary, isolation_level=None)
        try:
            # One step (-1 pages): one read transaction, one moment.
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")
            return _count(copy)
        finally:
            copy.close()


def backup_database(path: str, dest: str) -> int:
    """
    Copy the database file C{path} (which a server may be using) to the new
    file C{dest}; return the number of messages in the copy. Blocking.
    """
    if not os.path.isfile(path):
        raise StoreError(f"no database at {path!r}")
    try:
        # Read-only: the backup never changes the server's database.
        source = existing_database(path, "ro", 10)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path!r}: {e}") from e
    try:
        try:
            source.execute("SELECT 1 FROM messages LIMIT 1")
        except sqlite3.Error as e:
            raise StoreError(f"{path!r} is not a chat database: {e}") from e
        return backup_connection(source, dest)
    finally:
        source.close()


def write_database(dest: str, messages: Sequence[StoredMessage], last_id: int) -> int:
    """
    Write C{messages} to the new SQLite database C{dest}, in the current
    schema, with their ids, and ids up to C{last_id} marked as used. Return
    the number of messages written. Blocking.
    """
    with _new_file(dest) as temporary:
        db = sqlite3.connect(temporary, isolation_level=None)
        try:
            upgrade(db, dest)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages (id, room, timestamp, sender, content)"
                " VALUES (?, ?, ?, ?, ?)",
                [(m.id, m.room, m.timestamp, m.sender, m.content) for m in messages],
            )
            # AUTOINCREMENT never gives out an id at or below seq again.
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (last_id,))
            db.execute("COMMIT")
            return _count(db)
        finally:
            db.close()


def main(argv: Optional[List[str]] = None) -> int:
    """
    The command line; returns the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="chat-backup",
        description=(
            "Copy the chat server's database DATABASE to the new file DEST. Safe while a"
            " server uses DATABASE: it goes on serving, and the copy holds every message"
            " stored up to one moment. DEST is one SQLite file a server can open as it is."
        ),
    )
    parser.add_argument("database", metavar="DATABASE", help="the server's database file")
    parser.add_argument("dest", metavar="DEST", help="the backup file to create (must not exist)")
    args = parser.parse_args(argv)
    try:
        count = backup_database(args.database, args.dest)
    except StoreError as e:
        print(f"chat-backup: {e}", file=sys.stderr)
        return 1
    print(f"chat-backup: {count} messages copied from {args.database} to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
