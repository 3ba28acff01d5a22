"""
History stores: where the chat keeps every message it broadcast.

The chat core talks to a store only through L{IMessageStore}. Two
implementations: L{MemoryStore} (nothing kept after exit; used in tests and
with C{--database :memory:}) and L{SQLiteStore} (a file; the default).

Stores are synchronous. The core calls L{IMessageStore.append} once per
reactor turn with every message that arrived in that turn, so the cost of a
commit is shared; with SQLite in WAL mode a commit is a write to the log, not
an fsync, and it survives the process being killed at any moment.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import List, Sequence

from zope.interface import Interface, implementer


@dataclass(frozen=True)
class Message:
    """
    One chat message as the server issued it.
    """

    timestamp: str
    sender: str
    content: str


class StoreError(Exception):
    """
    The store could not do what was asked (disk full, database locked, ...).
    """


class IMessageStore(Interface):
    def load() -> List[Message]:
        """
        Every stored message, oldest first.
        """

    def append(messages: Sequence[Message]) -> None:
        """
        Store C{messages} durably, all or none; raise L{StoreError} on failure.
        """

    def close() -> None:
        """
        Release the store's resources.
        """


@implementer(IMessageStore)
class MemoryStore:
    """
    A store that keeps messages in a list, for tests and throwaway servers.
    """

    def __init__(self) -> None:
        self.messages: List[Message] = []
        self.closed = False

    def load(self) -> List[Message]:
        return list(self.messages)

    def append(self, messages: Sequence[Message]) -> None:
        if self.closed:
            raise StoreError("store is closed")
        self.messages.extend(messages)

    def close(self) -> None:
        self.closed = True


def _schema() -> str:
    return resources.files("chat").joinpath("schema.sql").read_text("utf-8")


@implementer(IMessageStore)
class SQLiteStore:
    """
    A store in an SQLite database file.

    @param path: the file (created if missing), or C{":memory:"}.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL keeps every commit across a crash of the
            # process (kill -9); only a power loss may drop the latest ones.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=1000")
            self._db.executescript(_schema())
        except sqlite3.Error as e:
            raise StoreError(f"cannot open database {path!r}: {e}") from e

    def load(self) -> List[Message]:
        rows = self._db.execute("SELECT timestamp, sender, content FROM messages ORDER BY id")
        return [Message(*row) for row in rows]

    def append(self, messages: Sequence[Message]) -> None:
        try:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
                    [(m.timestamp, m.sender, m.content) for m in messages],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(str(e)) from e

    def close(self) -> None:
        self._db.close()
