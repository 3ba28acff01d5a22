"""
The SQLite store across real processes: one server per database file, what
survives C{kill -9}, and the backup command run beside a process that keeps
writing.
"""

from __future__ import annotations

import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from typing import List, Optional

from twisted.trial.unittest import TestCase

from tests.support import PATIENCE, child_env

#: A process that uses a store. argv: MODE PATH. "hold": open, say
#: "open", close when stdin ends. "append": open, append batches of 10 for
#: ever, printing the last id of each once its append has fired. "open":
#: try to open, print the result, exit 0 if it opened.
CHILD = r"""
import sys
from twisted.internet import defer, task, threads
from chat.storage import Message, SQLiteStore, StoreError

@defer.inlineCallbacks
def main(reactor, mode, path):
    try:
        store = yield SQLiteStore.open(path, reactor)
    except StoreError as e:
        print("error:", e, flush=True)
        raise SystemExit(1)
    print("open", flush=True)
    if mode == "hold":
        # The store stays open until stdin ends.
        yield threads.deferToThread(sys.stdin.read)
    elif mode == "append":
        n = 0
        while True:
            batch = [Message("lobby", "2026-11-24T22:00:00Z", "w", f"m{n + i}") for i in range(10)]
            ids = yield store.append(batch)
            n += 10
            print(ids[-1], flush=True)
    yield store.close()

task.react(main, sys.argv[1:])
"""


class Child:
    """
    A child process running L{CHILD}, whose output is read line by line.
    """

    def __init__(self, mode: str, path: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, path],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def line(self) -> Optional[str]:
        """
        The next line of output, or None at its end; fails after PATIENCE.
        """
        deadline = time.monotonic() + PATIENCE
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the child; got {self._buffer!r}")
            if self._selector.select(left):
                data = os.read(fd, 65536)
                if not data:
                    return None
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def finish(self) -> int:
        self.process.stdin.close()
        status = self.process.wait(PATIENCE)
        self._selector.close()
        self.process.stdout.close()
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.finish()


def backup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chat.storage.backup", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )


class ProcessTests(TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "chat.db")

    def child(self, mode: str) -> Child:
        child = Child(mode, self.path)
        self.addCleanup(child.kill)
        return child

    def rows(self, path: str) -> List[tuple]:
        db = sqlite3.connect(path)
        try:
            return db.execute("SELECT id, content FROM messages ORDER BY id").fetchall()
        finally:
            db.close()

    def test_second_process_refused_until_first_dies(self):
        """
        While one process has the database open, another that tries gets a
        one-line error naming the file and exits non-zero; the backup
        command still works; once the first is killed, the file opens.
        """
        first = self.child("hold")
        self.assertEqual(first.line(), "open")
        second = self.child("open")
        output = [second.line(), second.line()]
        self.assertEqual(second.finish(), 1)
        self.assertIsNone(output[1], output)
        self.assertIn(f"database {self.path!r} is in use by another chat server", output[0])

        copy = os.path.join(self.directory, "copy.db")
        result = backup(self.path, copy)
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertEqual(self.rows(copy), [])

        first.kill()
        third = self.child("open")
        self.assertEqual(third.line(), "open")
        self.assertEqual(third.finish(), 0)

    def test_acknowledged_appends_survive_kill(self):
        """
        Every append that fired before the process was killed with
        SIGKILL is in the database afterwards, whole.
        """
        writer = self.child("append")
        self.assertEqual(writer.line(), "open")
        acknowledged = [int(writer.line()) for _ in range(50)]
        writer.process.send_signal(signal.SIGKILL)
        # Lines already written are acknowledged too.
        while True:
            line = writer.line()
            if line is None:
                break
            acknowledged.append(int(line))
        writer.finish()
        rows = self.rows(self.path)
        self.assertGreaterEqual(len(rows), acknowledged[-1])
        self.assertEqual(len(rows) % 10, 0)
        self.assertEqual(rows, [(i + 1, f"m{i}") for i in range(len(rows))])

    def test_backup_command_while_a_process_writes(self):
        """
        The backup command run while another process appends without pause
        makes a copy holding exactly the first k messages, k at least what
        was acknowledged before it started; the writer is not held up.
        """
        writer = self.child("append")
        self.assertEqual(writer.line(), "open")
        for _ in range(20):
            acknowledged = int(writer.line())
        copy = os.path.join(self.directory, "copy.db")
        result = backup(self.path, copy)
        self.assertEqual(result.returncode, 0, result.stderr)
        # The writer went on: more acknowledgements after the backup.
        for _ in range(20):
            after = int(writer.line())
        self.assertGreater(after, acknowledged)
        writer.kill()
        rows = self.rows(copy)
        self.assertGreaterEqual(len(rows), acknowledged)
        self.assertEqual(rows, [(i + 1, f"m{i}") for i in range(len(rows))])
        self.assertIn(f"{len(rows)} messages copied", result.stdout)

    def test_backup_command_errors_are_one_line(self):
        """
        The backup command's failures are one line on standard error with
        exit status 1, naming the file; usage errors exit 2.
        """
        open(os.path.join(self.directory, "taken.db"), "w").close()
        with open(os.path.join(self.directory, "junk"), "w") as f:
            f.write("not a database" * 100)
        source = os.path.join(self.directory, "real.db")
        sqlite3.connect(source).execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, x)"
        ).connection.close()
        cases = [
            ((self.path, "x.db"), "no database at"),
            ((os.path.join(self.directory, "junk"), "y.db"), "is not a chat database"),
            ((source, os.path.join(self.directory, "taken.db")), "it exists"),
            ((source, os.path.join(self.directory, "no", "z.db")), "does not exist"),
        ]
        for args, text in cases:
            result = backup(*args)
            self.assertEqual(result.returncode, 1, result)
            self.assertEqual(result.stdout, "")
            self.assertEqual(result.stderr.count("\n"), 1, result.stderr)
            self.assertIn(text, result.stderr)
        self.assertEqual(backup().returncode, 2)
        self.assertIn("Safe while a server", backup("--help").stdout.replace("\n", " "))
