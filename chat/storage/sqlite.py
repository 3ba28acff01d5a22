"""
The SQLite message store: a database file, used on one thread of its own.

The connection lives on a dedicated one-thread pool, so a slow disk or a
database locked by another program holds up only the store, never the
reactor. Operations run one at a time in the order they were called;
appends that wait behind a running operation are written together in one
transaction (group commit), each of them all or none.

Durability: WAL with C{synchronous=NORMAL}. A commit is a write to the log,
not an fsync, and survives the process being killed at any moment (only a
power loss may drop the latest commits).

Checkpoints: copying the log back into the database syncs both files (some
10 ms on a VM's disk). SQLite does it in the commit that fills the log past
1,000 pages, so every append waiting behind that commit waited for the
syncs too: the slowest deliveries of a busy chat. The store's connection
leaves it (L{WAL_BACKSTOP}) to a checkpoint from a connection of its own on
the reactor's thread pool, started every L{CHECKPOINT_EVERY} pages or so
of appends and prunes, which the writer does not wait for.

Schema: versioned by C{PRAGMA user_version}, in C{schema/vN.sql}, where
C{v1.sql} is the schema of the first release (which left user_version at
0) and each later file upgrades the one before it. Opening applies what is
missing in one transaction.

One server per file: the store holds an exclusive C{flock} on the database
file for its life, so a second server on the same file refuses to start.
SQLite's own locks are POSIX record locks, which C{flock} does not touch, so
readers such as the backup command still work.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import os
import sqlite3
import threading
from importlib import resources
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.request import pathname2url

from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chat.storage.interfaces import (
    IMessageStore,
    Message,
    StoredMessage,
    StoreError,
    check_limit,
    check_messages,
    check_retention,
    cutoff,
)

#: The schema version this code writes; C{schema/v1.sql} .. C{vN.sql}.
VERSION = 2

#: At most this many messages in one group-commit transaction.
MAX_GROUP = 8192

#: Start a checkpoint after appends of about this many pages (frames) to
#: the log (SQLite's own default is 1,000): see L{log_pages}.
CHECKPOINT_EVERY = 500

#: Messages per page that a prune's deletions count as, for checkpoints.
ROWS_PER_PAGE = 32

#: After a failed append (a full disk, say), a checkpoint is tried at most
#: this often: once it has copied the log, the log's space is used again
#: from its start, and appends can go on without the file growing.
CHECKPOINT_AFTER_FAILURE = 1.0


def log_pages(messages: Sequence[Message]) -> int:
    """
    About how many pages a commit of C{messages} appends to the log, an
    over-estimate rather than under: the index's page and
    C{sqlite_sequence}'s, the table's pages for the rows' bytes (with
    their overflow pages), and the b-tree pages that splits touch.
    Measured: one message of 100 characters, 3 frames; 64 of them, 9; one
    of 1,000 emoji, 5; 16 of them, 21. (This gives 3, 17, 5 and 37.)
    """
    size = sum(len(m.content.encode("utf-8", "surrogatepass")) + 100 for m in messages)
    return 2 + len(messages) // 8 + -(-size // 2000)


#: The store's own connection checkpoints only if the log passes this many
#: pages (40 MB): a backstop, should checkpoints from the side fail or lag.
WAL_BACKSTOP = 10000

#: Rows a prune looks at (by age) or removes (by count) per transaction, so
#: that a big prune never holds the write lock for long.
PRUNE_CHUNK = 2000

#: Index entries a count prune reads per step when it looks for the oldest
#: message to keep.
PRUNE_STEP = 50000

_COLUMNS = "id, room, timestamp, sender, content"

#: Rows per INSERT statement. Many rows in one statement is one call into
#: SQLite, so one release of the GIL, where executemany releases and takes
#: it back for every row: with the reactor thread busy, taking it back can
#: wait up to a switch interval (5 ms) each time. Powers of two, so that a
#: few prepared statements serve every batch; 128 rows are 512 parameters,
#: under the 999 of old SQLite versions.
_INSERT_ROWS = (128, 64, 32, 16, 8, 4, 2, 1)

#: A batch of at most this many messages is written by one INSERT of
#: exactly its rows, with no BEGIN and COMMIT: in autocommit mode one
#: statement is a transaction of its own. One call into SQLite instead of
#: four to nine: about 40 % less CPU for a batch of 15 (the batches of a
#: busy chat with few recipients, where the store's CPU is a fair part of
#: the server's). At most 64 prepared statements more, which sqlite3's
#: statement cache (128) holds.
_ONE_STATEMENT = 64


def _insert(rows: int) -> str:
    return "INSERT INTO messages (room, timestamp, sender, content) VALUES " + ", ".join(
        ["(?, ?, ?, ?)"] * rows
    )


_INSERT = {rows: _insert(rows) for rows in set(_INSERT_ROWS) | set(range(1, _ONE_STATEMENT + 1))}


def schema_script(version: int) -> str:
    """
    The SQL of C{schema/v<version>.sql}.
    """
    return resources.files("chat.storage").joinpath(f"schema/v{version}.sql").read_text("utf-8")


def statements(script: str) -> List[str]:
    """
    The statements of an SQL script, so that each can run inside one
    transaction (C{executescript} would commit first on older Pythons).
    Each statement must end its last line.
    """
    result, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            result.append(current.strip())
            current = ""
    rest = "".join(line for line in current.splitlines() if not line.lstrip().startswith("--"))
    if rest.strip():
        raise ValueError(f"incomplete SQL statement: {current.strip()!r}")
    return result


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """
    A write transaction on C{db} (autocommit mode): committed if the block
    ends, rolled back if it raises.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def upgrade(db: sqlite3.Connection, name: str) -> int:
    """
    Bring the database on C{db} (autocommit mode) to L{VERSION} in one
    transaction; return the version it had. C{name} is for errors. A
    database already at L{VERSION} is only read (no write lock), so another
    program writing to it does not keep the server from starting.
    """
    (found,) = db.execute("PRAGMA user_version").fetchone()
    if found == VERSION:
        return found
    with transaction(db):
        (found,) = db.execute("PRAGMA user_version").fetchone()
        if found > VERSION:
            raise StoreError(
                f"database {name!r} has schema version {found}, newer than this server's"
                f" {VERSION}: run a newer chat server"
            )
        # A database of the first release has user_version 0, like an
        # empty one: v1.sql creates its table only if it is missing.
        for version in range(found + 1, VERSION + 1):
            for statement in statements(schema_script(version)):
                db.execute(statement)
        if found != VERSION:
            db.execute(f"PRAGMA user_version = {VERSION}")
    return found


def existing_database(path: str, mode: str, timeout: float, **kwargs: Any) -> sqlite3.Connection:
    """
    A connection to the database file at C{path} that must exist (never
    made anew), opened by a quoted C{file:} URI in C{mode} (C{"ro"} or
    C{"rw"}).
    """
    uri = f"file:{pathname2url(os.path.abspath(path))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, timeout=timeout, **kwargs)


def checkpoint_database(path: str, busy_timeout: float) -> int:
    """
    Copy what the log of the database at C{path} holds back into it, from a
    connection of its own, without waiting for its writer (a passive
    checkpoint); return the number of pages copied. Blocking. A file that
    is gone is an error, never made anew.
    """
    db = existing_database(path, "rw", busy_timeout, isolation_level=None)
    try:
        ((_busy, _log, copied),) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        db.close()
    return max(copied, 0)


def connect(path: str, busy_timeout: float, check_same_thread: bool = True) -> sqlite3.Connection:
    """
    Open (or create) the database at C{path} for the store, upgraded to the
    current schema. Blocking: call it on the store's thread (or, with
    C{check_same_thread} false, on another before the store's thread uses
    it, and never again there).
    """
    db = sqlite3.connect(
        path, isolation_level=None, timeout=busy_timeout, check_same_thread=check_same_thread
    )
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL keeps every commit across a crash of the
        # process (kill -9); only a power loss may drop the latest ones.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP}")
        upgrade(db, path)
    except BaseException:
        db.close()
        raise
    return db


def lock_file(path: str) -> Optional[int]:
    """
    Open C{path} (creating it) and take an exclusive C{flock} on it; return
    the descriptor, which holds the lock until closed. L{StoreError} if the
    directory is missing, the file cannot be opened, or another server
    holds the lock. None for C{":memory:"}.
    """
    if path == ":memory:":
        return None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"cannot open database {path!r}: directory {directory!r} does not exist")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise StoreError(f"cannot open database {path!r}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StoreError(
                f"database {path!r} is in use by another chat server"
                " (two servers cannot share one database file)"
            ) from e
        raise StoreError(f"cannot lock database {path!r}: {e.strerror}") from e
    return fd


def _file_id(path: str) -> Optional[Tuple[int, int]]:
    """
    The device and inode of the file at C{path}, or None if there is none.
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _store_error(name: str, failure: Failure) -> Failure:
    """
    C{failure} as a L{StoreError} naming the database, if it is an SQLite
    or OS error; anything else (a bug) passes unchanged.
    """
    e = failure.value
    if isinstance(e, (sqlite3.Error, OSError)):
        return Failure(StoreError(f"database {name!r}: {e}".replace("\n", " ")))
    return failure


def _values(messages: Sequence[Message]) -> List[Any]:
    """
    The parameters of an INSERT of C{messages}, row after row.
    """
    return [value for m in messages for value in (m.room, m.timestamp, m.sender, m.content)]


def _rows(cursor: sqlite3.Cursor) -> List[StoredMessage]:
    """
    Rows selected newest first, as messages oldest first.
    """
    rows = cursor.fetchall()
    rows.reverse()
    return [StoredMessage(*row) for row in rows]


@implementer(IMessageStore)
class SQLiteStore:
    """
    An L{IMessageStore} in an SQLite database. Make one with L{open}.

    @ivar path: the database file, or C{":memory:"}.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        reactor: Any,
        clock: Any = None,
        busy_timeout: float = 1.0,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._busy_timeout = busy_timeout
        self._pool = ThreadPool(1, 1, name=f"chat-sqlite {path}")
        # The owner closes the store (close() waits for what was asked); a
        # store left open must not keep the process from exiting, and a
        # transaction cut short by exit is rolled back by SQLite.
        self._pool.threadFactory = functools.partial(threading.Thread, daemon=True)
        self._lock_fd: Optional[int] = None
        self._db: Optional[sqlite3.Connection] = None
        self._wal: Optional[Tuple[int, int]] = None  # the log file's device and inode
        # (callable to run on the thread or messages to append, Deferred)
        self._queue: Deque[Tuple[Any, Deferred]] = collections.deque()
        self._running = False
        self._closed = False
        self._closing: Optional[Deferred] = None
        # Backups and checkpoints: work on connections of their own, which
        # close() waits for.
        self._aside: Set[Deferred] = set()
        # Pages (about) appended to the log since the last checkpoint began.
        self._unchecked = 0
        self._checkpointing: Optional[Deferred] = None
        self._failure_checkpoint = float("-inf")  # when one was last tried
        self._append_failed = False  # the last append failed

    @classmethod
    def open(
        cls,
        path: str,
        reactor: Any,
        clock: Any = None,
        busy_timeout: float = 1.0,
    ) -> Deferred[SQLiteStore]:
        """
        Open the store at C{path}, creating and upgrading the database as
        needed. Fires with the store, or fails with a one-line
        L{StoreError}. The lock and the directory are checked at once, so a
        second server on the same file gets a Deferred that has already
        failed.

        @param reactor: provides C{callFromThread} and C{getThreadPool}
            (L{IReactorThreads}).
        @param clock: the time for L{prune} (default: C{reactor}).
        @param busy_timeout: seconds to wait for a lock held by another
            connection before failing.
        """
        store = cls(path, reactor, clock, busy_timeout)
        try:
            store._lock_fd = lock_file(path)
        except StoreError:
            return fail()
        store._pool.start()
        d = store._call(store._connect)

        def failed(failure: Failure) -> Deferred:
            return store.close().addBoth(lambda _: failure)

        return d.addCallbacks(lambda _: store, failed)

    @classmethod
    def start(
        cls,
        path: str,
        reactor: Any,
        clock: Any = None,
        busy_timeout: float = 1.0,
    ) -> "SQLiteStore":
        """
        Open the store at once, blocking: for a server's start-up, before
        the reactor runs, so that every reason it cannot be opened (a
        missing directory, another server's lock, a file that is not a
        database, a failed upgrade) raises L{StoreError} here, for a
        one-line error and an exit. The connection made here is used on
        the store's thread only from then on.
        """
        store = cls(path, reactor, clock, busy_timeout)
        store._lock_fd = lock_file(path)
        try:
            store._connect(check_same_thread=False)
        except (sqlite3.Error, OSError) as e:
            store._release(None)
            raise StoreError(f"database {path!r}: {e}".replace("\n", " ")) from e
        except BaseException:
            store._release(None)
            raise
        store._pool.start()
        return store

    # The queue: one operation on the thread at a time, in call order.

    def _submit(self, work: Any) -> Deferred:
        if self._closed:
            return fail(StoreError(f"database {self.path!r} is closed"))
        d: Deferred = Deferred()
        self._queue.append((work, d))
        self._next()
        return d

    def _call(self, f: Callable[..., Any], *args: Any) -> Deferred:
        return self._submit(functools.partial(f, *args))

    def _next(self) -> None:
        if self._running or not self._queue:
            return
        work, d = self._queue.popleft()
        waiting = [d]
        grouped = isinstance(work, list)
        if grouped:
            # Group commit: every append waiting right behind this one
            # joins its transaction, up to MAX_GROUP messages.
            groups = [work]
            size = len(work)
            while (
                self._queue
                and isinstance(self._queue[0][0], list)
                and size + len(self._queue[0][0]) <= MAX_GROUP
            ):
                more, d = self._queue.popleft()
                groups.append(more)
                waiting.append(d)
                size += len(more)
            work = functools.partial(self._write, groups)
        self._running = True
        result = deferToThreadPool(self._reactor, self._pool, work)
        result.addBoth(self._finished, waiting, grouped)

    def _finished(self, result: Any, waiting: List[Deferred], grouped: bool) -> None:
        self._running = False
        # Start the next operation before running the callbacks of this
        # one, so that the thread works while the reactor delivers.
        self._next()
        if isinstance(result, Failure):
            if grouped:
                self._failed_append()
            result = _store_error(self.path, result)
            for d in waiting:
                d.errback(result)
        elif grouped:
            pages, result = result
            if self._append_failed:
                # The first append after failures: room came back. Copy the
                # log now, before appends fill that room with it again.
                self._append_failed = False
                pages = max(pages, CHECKPOINT_EVERY)
            self._logged(pages)
            for d, ids in zip(waiting, result):
                d.callback(ids)
        else:
            waiting[0].callback(result)

    def _logged(self, pages: int) -> None:
        """
        About C{pages} pages were appended to the log: start a checkpoint
        if enough have been since the last one began, and none runs.
        """
        self._unchecked += pages
        if (
            self._unchecked >= CHECKPOINT_EVERY
            and self._checkpointing is None
            and self.path != ":memory:"
            and not self._closed
        ):
            self._unchecked = 0
            self._checkpointing = self._aside_work(
                checkpoint_database, self.path, self._busy_timeout
            ).addErrback(self._checkpoint_failed)
            self._checkpointing.addBoth(self._checkpointed)

    def _failed_append(self) -> None:
        """
        An append failed: if the disk is full, a checkpoint lets the log's
        space be used again once a little room comes back (the database
        file grows by the data alone). Tried at most once a
        L{CHECKPOINT_AFTER_FAILURE}, and again with the first append that
        succeeds after the failures.
        """
        self._append_failed = True
        now = self._clock.seconds()
        if now - self._failure_checkpoint >= CHECKPOINT_AFTER_FAILURE:
            self._failure_checkpoint = now
            self._logged(CHECKPOINT_EVERY)

    def _checkpoint_failed(self, failure: Failure) -> None:
        # Nothing is lost: the log keeps every commit, and the next
        # checkpoint (or the backstop) copies it.
        self.log.warn(
            "Checkpoint of {path} failed: {error}",
            path=self.path,
            error=_store_error(self.path, failure).getErrorMessage(),
        )

    def _checkpointed(self, result: Any) -> Any:
        self._checkpointing = None
        return result

    def _aside_work(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{f(*args)} on the reactor's thread pool, on a connection of its
        own; close() waits for it.
        """
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)
        # Closing the lock's descriptor before it ends would drop the POSIX
        # locks SQLite holds on the file for its connection in this process.
        finished: Deferred = Deferred()
        self._aside.add(finished)

        def done(result: Any) -> Any:
            self._aside.discard(finished)
            finished.callback(None)
            return result

        return d.addBoth(done)

    # Work on the store's thread.

    def _connect(self, check_same_thread: bool = True) -> None:
        """
        Open the connection (see L{connect}), and note which file the log is
        (L{_check_files}).
        """
        self._db = connect(self.path, self._busy_timeout, check_same_thread)
        self._wal = _file_id(self.path + "-wal")

    def _check_files(self) -> None:
        """
        Refuse to write if the database file or its log was removed,
        moved or replaced while the server runs: what SQLite then writes
        (to a file no name leads to) would be lost at the next start,
        after clients were shown it.
        """
        if self._lock_fd is None:
            return
        held = os.fstat(self._lock_fd)
        problem = None
        if held.st_nlink == 0 or _file_id(self.path) != (held.st_dev, held.st_ino):
            problem = f"database {self.path!r} was removed, moved or replaced"
        elif self._wal is not None and _file_id(self.path + "-wal") != self._wal:
            problem = f"the log of database {self.path!r} ({self.path}-wal) was removed or replaced"
        if problem is not None:
            raise StoreError(
                f"{problem} while the server ran; nothing more can be stored: restart the server"
            )

    def _write(self, groups: List[Sequence[Message]]) -> Tuple[int, List[List[int]]]:
        db = self._db
        assert db is not None
        self._check_files()
        messages = [m for group in groups for m in group]
        # AUTOINCREMENT under the write lock: consecutive ids, in order; the
        # last statement's lastrowid is the last message's.
        if len(messages) <= _ONE_STATEMENT:
            last = db.execute(_INSERT[len(messages)], _values(messages)).lastrowid
        else:
            with transaction(db):
                done = 0
                for rows in _INSERT_ROWS:
                    while len(messages) - done >= rows:
                        last = db.execute(
                            _INSERT[rows], _values(messages[done : done + rows])
                        ).lastrowid
                        done += rows
        assert last is not None
        ids = iter(range(last - len(messages) + 1, last + 1))
        return log_pages(messages), [[next(ids) for _ in group] for group in groups]

    def _recent(self, room: str, limit: int) -> List[StoredMessage]:
        assert self._db is not None
        return _rows(
            self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY id DESC LIMIT ?",
                (room, limit),
            )
        )

    def _before(self, room: str, before_id: int, limit: int) -> List[StoredMessage]:
        assert self._db is not None
        return _rows(
            self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND id < ?"
                " ORDER BY id DESC LIMIT ?",
                (room, before_id, limit),
            )
        )

    def _prune_old(self, after_id: int, last_id: int, older_than: str) -> Tuple[int, int]:
        """
        Remove the messages older than C{older_than} among the next
        L{PRUNE_CHUNK} ids after C{after_id} (up to C{last_id}); return how
        many were removed and the last id looked at.
        """
        db = self._db
        assert db is not None
        (upto,) = db.execute(
            "SELECT max(id) FROM (SELECT id FROM messages WHERE id > ? AND id <= ?"
            " ORDER BY id LIMIT ?)",
            (after_id, last_id, PRUNE_CHUNK),
        ).fetchone()
        if upto is None:
            return 0, last_id
        with transaction(db):
            removed = db.execute(
                "DELETE FROM messages WHERE id > ? AND id <= ? AND timestamp < ?",
                (after_id, upto, older_than),
            ).rowcount
        return removed, upto

    def _next_room(self, after: Optional[str]) -> Optional[str]:
        assert self._db is not None
        row = self._db.execute(
            "SELECT room FROM messages WHERE room > ? ORDER BY room LIMIT 1"
            if after is not None
            else "SELECT room FROM messages ORDER BY room LIMIT 1",
            (after,) if after is not None else (),
        ).fetchone()
        return row[0] if row else None

    def _step_back(self, room: str, below_id: int, count: int) -> Optional[int]:
        """
        The id of the C{count}th message of C{room} below C{below_id}
        (counting down), or None if there are fewer.
        """
        assert self._db is not None
        row = self._db.execute(
            "SELECT id FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (room, below_id, count - 1),
        ).fetchone()
        return row[0] if row else None

    def _prune_room(self, room: str, below_id: int) -> int:
        """
        Remove the oldest L{PRUNE_CHUNK} messages of C{room} below
        C{below_id}; return how many were removed.
        """
        db = self._db
        assert db is not None
        with transaction(db):
            return db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages"
                " WHERE room = ? AND id < ? ORDER BY id LIMIT ?)",
                (room, below_id, PRUNE_CHUNK),
            ).rowcount

    def _last_id(self) -> int:
        assert self._db is not None
        (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        return last

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # IMessageStore

    def append(self, messages: Sequence[Message]) -> Deferred[List[int]]:
        messages = list(messages)
        try:
            check_messages(messages)
        except StoreError:
            return fail()
        if not messages and not self._closed:
            return succeed([])
        return self._submit(messages)

    def recent(self, room: str, limit: int) -> Deferred[List[StoredMessage]]:
        check_limit(limit)
        return self._call(self._recent, room, limit)

    def before(self, room: str, before_id: int, limit: int) -> Deferred[List[StoredMessage]]:
        check_limit(limit)
        return self._call(self._before, room, before_id, limit)

    def prune(
        self, keep_days: Optional[float] = None, keep_last: Optional[int] = None
    ) -> Deferred[int]:
        """
        See L{IMessageStore.prune}. Each chunk is its own short transaction
        and its own turn on the thread, so appends and reads go on between
        chunks.
        """
        check_retention(keep_days, keep_last)
        return self._prune(keep_days, keep_last)

    @inlineCallbacks
    def _prune(self, keep_days: Optional[float], keep_last: Optional[int]) -> Any:
        removed = 0
        if keep_days is not None:
            older_than = cutoff(self._clock.seconds(), keep_days)
            # Messages stored after the prune began are new: stop there.
            last_id = yield self._call(self._last_id)
            after = 0
            while after < last_id:
                count, after = yield self._call(self._prune_old, after, last_id, older_than)
                self._pruned(count)
                removed += count
        if keep_last is not None:
            end = (yield self._call(self._last_id)) + 1
            room = yield self._call(self._next_room, None)
            while room is not None:
                # Find the oldest message to keep, counting back from the
                # newest in steps (each step reads at most PRUNE_STEP
                # index entries), then remove what is below it in chunks.
                keep_from: Optional[int] = end
                left = keep_last
                while left and keep_from is not None:
                    step = min(left, PRUNE_STEP)
                    keep_from = yield self._call(self._step_back, room, keep_from, step)
                    left -= step
                while keep_from is not None:
                    count = yield self._call(self._prune_room, room, keep_from)
                    self._pruned(count)
                    removed += count
                    if count < PRUNE_CHUNK:
                        break
                room = yield self._call(self._next_room, room)
        return removed

    def _pruned(self, count: int) -> None:
        # Removed rows are written to the log as appended ones are.
        if count:
            self._logged(1 + count // ROWS_PER_PAGE)

    def backup(self, path: str) -> Deferred[int]:
        """
        See L{IMessageStore.backup}. A database file is copied from a
        connection of its own on the reactor's thread pool, so the store
        goes on writing meanwhile; C{":memory:"} from the store's own.
        """
        from chat.storage.backup import backup_connection, backup_database

        if self._closed:
            return fail(StoreError(f"database {self.path!r} is closed"))
        if self.path == ":memory:":
            return self._call(lambda: backup_connection(self._db, path))
        return self._aside_work(backup_database, self.path, path)

    def close(self) -> Deferred[None]:
        """
        See L{IMessageStore.close}: what was asked before runs first.
        """
        if self._closing is None:
            if self._pool.started:
                self._closing = self._call(self._close_db)
            else:
                self._closing = succeed(None)
            self._closed = True
            self._closing.addBoth(lambda _: DeferredList(list(self._aside))).addBoth(self._release)
        d: Deferred = Deferred()

        def done(result: Any) -> Any:
            d.callback(None)
            return result

        self._closing.addBoth(done)
        return d

    def _release(self, result: Any) -> Any:
        if self._pool.started:
            self._pool.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return None
