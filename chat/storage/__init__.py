"""
Message storage behind one asynchronous interface, L{IMessageStore}:
L{MemoryStore} (tests, C{--database :memory:}) and L{SQLiteStore} (a file,
used off the reactor thread). C{chat.storage.backup} is the backup command,
C{chat.storage.retention} applies a retention while the server runs, and
C{chat.storage.testing} has fakes for the core's tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from chat.storage.interfaces import LOBBY, IMessageStore, Message, StoredMessage, StoreError
from chat.storage.memory import MemoryStore
from chat.storage.sqlite import SQLiteStore

__all__ = [
    "LOBBY",
    "IMessageStore",
    "Message",
    "MemoryStore",
    "SQLiteStore",
    "StoreError",
    "StoredMessage",
    "open_store",
]


def open_store(path: str, reactor: Any, clock: Any = None) -> Deferred[IMessageStore]:
    """
    The store for C{--database PATH}: a L{MemoryStore} for C{":memory:"},
    else an L{SQLiteStore} (see L{SQLiteStore.open} for its failures).
    """
    if path == ":memory:":
        return succeed(MemoryStore(clock if clock is not None else reactor))
    return SQLiteStore.open(path, reactor, clock)
