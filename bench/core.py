"""
The benchmarks of the windowed core (issue 9), measured from outside on the
server's default options:

    python -m bench startup         # start-up on 200,000 and 1,000,000 stored messages
    python -m bench stall           # 100 logins that never read, 50 at once: RSS, round trip
    python -m bench legacy-login    # a bare-JSON login on a long history; a live message
    python -m bench legacy-chat     # a bare-JSON client reading while 15 people chat
    python -m bench names           # names with 3,000 users to bare-JSON readers
    python -m bench emoji           # a 1,000-emoji message to bare-JSON readers
    python -m bench legacy-history  # recv(1024) and recv(4096) readers log in on a history
    python -m bench login-cpu       # server CPU per login on 1,000,000 stored messages

Each runs against ``chat`` (this checkout), ``old`` (the previous release,
a checkout with its own virtual environment: ``--old DIR``, see
bench/README.rst) and where it makes sense the asyncio baseline. Histories
are made directly in SQLite in the first release's schema (v1), which our
server upgrades at its first start. Every server listens on 127.0.0.1 only.

The bare-JSON ("legacy") client is a process of its own that reads as the
clients in the field do: one blocking C{recv(size)} and one C{json.loads}
per response, as soon as data arrives. Each read is classified
(L{classify_read}): exactly one response, more than one, a cut or invalid
one, or only white space; the time the reader waited for a CPU before a
read (Linux schedstat) is kept, so that two responses sharing a read
because the reader was late are told apart from the server sending them
together.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from bench.loadgen import Workers, sources
from bench.scenarios import _pct, _settle
from bench.servers import ROOT, Server
from chat.check.probe import cpu_wait

#: The previous release's checkout (``git worktree add DIR e72665a``), with
#: its own ``DIR/.venv`` (its plugin and ours are both named chat).
OLD = os.environ.get("BENCH_OLD", "/tmp/chat-old")

STAMP = "2026-11-24T22:00:00Z"

#: A send time (CLOCK_MONOTONIC ns) at the start of a message's text, also
#: inside a history item (where its quotes are escaped).
_STAMP = re.compile(rb'(?<![0-9A-Za-z])T(\d{9,})(?=[ "\\])')

#: The number at the start of each stored message's text (see L{fill}).
_SEQUENCE = re.compile(rb'content\\?":\\?"(\d{9}) ')

#: What the emoji scenario sends, a thousand times, and who sends it.
EMOJI = "\U0001f600"
SENDER = "emoji" + "x" * 27


# Pure helpers (tested in tests/test_bench.py)


def classify_read(data: bytes) -> str:
    """
    What one C{recv()} holds, for a client that does one C{json.loads} per
    read: C{"one"} response, C{"several"} (a whole response and more),
    C{"cut"} (not a whole JSON value) or C{"blank"} (white space only).
    """
    try:
        json.loads(data)
        return "one"
    except ValueError:
        pass
    text = data.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return "blank"
    try:
        json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return "cut"
    return "several"


def message_text(count: int, length: int) -> str:
    """
    The text of stored message number C{count}: its number, then filler,
    C{length} characters in all.
    """
    return (f"{count:09d} " + "x" * length)[:length]


def split_values(buffer: bytes) -> Tuple[List[Tuple[Any, bytes]], bytes]:
    """
    The complete JSON values at the start of C{buffer}, each with its bytes
    (as sent, without the white space around it), and what is left.
    """
    text = buffer.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    out = []
    pos = 0
    while True:
        start = len(text) - len(text[pos:].lstrip())
        if start == len(text):
            return out, b""
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            return out, text[start:].encode("utf-8", "surrogateescape")
        out.append((value, text[start:end].encode("utf-8", "surrogateescape")))
        pos = end


def names_in(texts: Iterable[str]) -> List[str]:
    """
    The names in the C{info} texts that answer C{names} (comma separated,
    perhaps across several responses).
    """
    return [name.strip() for text in texts for name in text.split(",") if name.strip()]


def percentiles(values_ns: Sequence[float]) -> Dict[str, float]:
    """
    p50, p99 and the maximum of nanosecond values, in milliseconds.
    """
    values = list(values_ns)
    return {
        "p50 ms": _pct(values, 0.50),
        "p99 ms": _pct(values, 0.99),
        "max ms": max(values) / 1e6 if values else float("nan"),
    }


class ReadLog:
    """
    What a legacy reader received, read by read: the class of each read
    (L{classify_read}) and each response once whole, with its arrival time,
    size in bytes, the send times (C{T<ns>}) and stored-message numbers it
    carries, and the texts of C{info} and C{error} responses.
    """

    #: A reader that waited this long for a CPU before a read may itself be
    #: why two responses share the read (the server paces them 10 ms apart).
    LATE_NS = 5_000_000

    def __init__(self) -> None:
        self.classes = {"one": 0, "several": 0, "cut": 0, "blank": 0}
        self.late_several = 0
        self.reads = 0
        self.largest_read = 0
        self.responses: List[Dict[str, Any]] = []
        self._buffer = b""

    def add(self, data: bytes, now_ns: int, waited_ns: Optional[int] = None) -> None:
        self.reads += 1
        self.largest_read = max(self.largest_read, len(data))
        kind = classify_read(data)
        self.classes[kind] += 1
        if kind == "several" and waited_ns is not None and waited_ns > self.LATE_NS:
            self.late_several += 1
        if not self._buffer and kind == "one":
            values = [(json.loads(data), data.strip())]
        else:
            values, self._buffer = split_values(self._buffer + data)
        for value, raw in values:
            self.responses.append(self.describe(value, raw, now_ns))

    @staticmethod
    def describe(value: Any, raw: bytes, now_ns: int) -> Dict[str, Any]:
        kind = value.get("response") if isinstance(value, dict) else None
        entry: Dict[str, Any] = {"t": now_ns, "kind": kind, "size": len(raw) + 1}
        if kind == "history" and isinstance(value.get("content"), list):
            entry["items"] = len(value["content"])
        content = value.get("content") if isinstance(value, dict) else None
        if kind in ("info", "error"):
            entry["text"] = content
        if kind == "message" and isinstance(content, str):
            entry["emoji"] = content.count(EMOJI)
            entry["shortened"] = "shortened" in content
        stamps = _STAMP.findall(raw)
        if stamps:
            entry["stamps"] = [int(s) for s in stamps]
        numbers = _SEQUENCE.findall(raw)
        if numbers:
            entry["numbers"] = [int(n) for n in numbers]
        return entry

    def first(self, what: Any) -> Optional[int]:
        """
        When the first response of kind C{what} (a string) or carrying the
        send time C{what} (a number) arrived, or None.
        """
        for r in self.responses:
            if r["kind"] == what if isinstance(what, str) else what in r.get("stamps", ()):
                return r["t"]
        return None

    def summary(self) -> Dict[str, Any]:
        return {
            "classes": dict(self.classes),
            "late several": self.late_several,
            "reads": self.reads,
            "largest read": self.largest_read,
            "responses": self.responses,
        }


# Servers


class Target(Server):
    """
    A server under test on its default options (ours, the previous release
    or the asyncio baseline) on a given database, listening on 127.0.0.1
    with Twisted's default backlog. C{started} is when the process was
    started (monotonic seconds).
    """

    def __init__(self, kind: str, database: str, old: str = OLD, extra: Sequence[str] = ()):
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"bench9-{kind}-")
        self.database = database
        self.log_path = os.path.join(self.dir, "server.log")
        if kind in ("chat", "old"):
            root = ROOT if kind == "chat" else old
            bindir = os.path.dirname(sys.executable) if kind == "chat" else f"{old}/.venv/bin"
            if not os.path.exists(os.path.join(bindir, "twistd")):
                raise SystemExit(f"no {bindir}/twistd: see bench/README.rst for --old")
            cmd = [os.path.join(bindir, "twistd"), "-n", "--pidfile=", "chat"]
            cmd += ["-p", "tcp:0:interface=127.0.0.1", "-d", database, *extra]
            self._pattern = re.compile(r"Listening on IPv4Address\(.*port=(\d+)\)")
        elif kind == "asyncio":
            root = ROOT
            cmd = [sys.executable, "-m", "bench.baseline_server", "--port", "0"]
            cmd += ["--database", database, *extra]
            self._pattern = re.compile(r"listening on (\d+)")
        else:
            raise ValueError(f"unknown server {kind!r}")
        env = dict(os.environ, PYTHONPATH=root)
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dir
        )
        self.pid = self.proc.pid
        self.port = 0

    def wait_port(self, timeout: float = 120) -> float:
        """
        Wait until the server says where it listens; return when that was
        (seconds since start; the log is polled every 5 ms).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                m = self._pattern.search(f.read().decode("utf-8", "replace"))
            if m:
                self.port = int(m.group(1))
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not start in time")

    def peak_mib(self) -> float:
        return self.memory()["VmHWM"] / 1024

    def rss_mib(self) -> float:
        return self.rss() / 2**20


def fill(path: str, count: int, length: int = 100, texts: Optional[Callable] = None) -> None:
    """
    A database in the first release's schema (v1, as e72665a made it)
    holding C{count} messages of C{length} characters (L{message_text}),
    or C{texts(i)} for message i.
    """
    from chat.storage.sqlite import schema_script

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema_script(1))
    text = texts or (lambda i: message_text(i, length))
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
        ((STAMP, f"user{i % 100}", text(i)) for i in range(count)),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


class Databases:
    """
    Filled databases, made once per size and copied for each server start
    (a first start upgrades its copy).
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench9-db-")
        self._made: Dict[Any, str] = {}
        self._copies = 0

    def copy(self, count: int, length: int = 100, texts: Optional[Callable] = None) -> str:
        key = (count, length, texts)
        source = self._made.get(key)
        if source is None:
            source = os.path.join(self.dir, f"filled-{len(self._made)}.sqlite3")
            t = time.monotonic()
            fill(source, count, length, texts)
            print(
                f"  filled {count:,} messages in {time.monotonic() - t:.1f} s"
                f" ({os.path.getsize(source) / 2**20:.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )
            self._made[key] = source
        self._copies += 1
        copy = os.path.join(self.dir, f"copy-{self._copies}.sqlite3")
        shutil.copy(source, copy)
        return copy

    @staticmethod
    def remove(path: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def serving(kind: str, dbs: "Databases", messages: int, old: str) -> Iterator[Target]:
    """
    A server on a fresh copy of a history of C{messages}, once a login has
    had its history and the server is idle; the copy is removed after.
    """
    path = dbs.copy(messages)
    try:
        with Target(kind, path, old) as server:
            server.wait_port()
            login_with_history(server)
            _settle(server)
            yield server
    finally:
        Databases.remove(path)


# Clients


def _connect(port: int, source: str = "127.0.0.1", timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(word: str, content: Any = None, newline: bool = True) -> bytes:
    data = json.dumps({"request": word, "content": content}).encode()
    return data + b"\n" if newline else data


def _more(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError("the server closed the connection during the login")
    return data


def read_login(sock: socket.socket) -> Tuple[float, float, bool]:
    """
    Read a login's responses on a stream connection: when the C{info} and
    the end of the C{history} arrived (monotonic seconds), and whether the
    history was empty. The history is read and dropped.
    """
    tail = b""
    info_at = 0.0
    while True:
        data = _more(sock)
        if not info_at and b'"info"' in tail + data:
            info_at = time.monotonic()
        buf = tail + data
        at = buf.find(b'"response":"history"')
        if at >= 0:
            # The history response is the last of the login: its end is
            # the first newline after its start.
            rest = buf[at:]
            empty_mark = b'"response":"history","content":[]'
            while len(rest) < len(empty_mark):
                rest += _more(sock)
            empty = rest.startswith(empty_mark)
            while b"\n" not in rest:
                rest = _more(sock)
            return info_at, time.monotonic(), empty
        tail = buf[-64:]


def login_timed(port: int, name: str, timeout: float = 600) -> Tuple[float, float, bool]:
    """
    Log in on a new stream connection, read the login (L{read_login}) and
    close.
    """
    sock = _connect(port, timeout=timeout)
    try:
        sock.sendall(request("login", name))
        return read_login(sock)
    finally:
        sock.close()


def login_with_history(server: "Target", attempts: int = 3000) -> Tuple[float, float, int]:
    """
    Log in as soon as the server listens, again every 10 ms until a login
    gets a history that is not empty (the database has messages); return
    when that login's C{info} and its history's end arrived, and how many
    logins before it were answered with an empty history.
    """
    empty_answers = 0
    for i in range(attempts):
        info_at, end_at, empty = login_timed(server.port, f"first{i}")
        if not empty:
            return info_at, end_at, empty_answers
        empty_answers += 1
        time.sleep(0.01)
    raise RuntimeError(f"{attempts} logins got an empty history")


class Pinger(threading.Thread):
    """
    A client that reads a stream, logged in, sending a message every
    C{interval} seconds (below the default flood rate) and timing each
    until it comes back: the round trip another client sees.
    """

    def __init__(self, port: int, name: str = "ping", interval: float = 0.15) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.sock = _connect(port, timeout=600)
        self.sock.sendall(request("login", name))
        self._own = re.compile(
            rb'"sender":"%s","response":"message","content":"P(\d+)"' % name.encode()
        )
        read_login(self.sock)
        self.sock.setblocking(False)
        self.sent: Dict[int, int] = {}  # sequence -> send time (ns)
        self.times: List[Tuple[int, int]] = []  # (send time, round trip) in ns
        self.closed = False
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        seq = 0
        due = time.monotonic()
        tail = b""
        while not self._halt.is_set():
            now = time.monotonic()
            if now >= due:
                with self._lock:
                    self.sent[seq] = time.monotonic_ns()
                try:
                    self.sock.send(request("msg", f"P{seq}"))
                except OSError:
                    pass
                seq += 1
                due += self.interval
            readable, _, _ = select.select([self.sock], [], [], max(0.0, due - time.monotonic()))
            if not readable:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            arrived = time.monotonic_ns()
            buf = tail + data
            cut = buf.rfind(b"\n") + 1
            tail = buf[cut:]
            with self._lock:
                for m in self._own.finditer(buf[:cut]):
                    sent = self.sent.pop(int(m.group(1)), None)
                    if sent is not None:
                        self.times.append((sent, arrived - sent))

    def between(self, start_ns: int, end_ns: int) -> Dict[str, float]:
        """
        Round trips of the messages sent between two times (a second after
        the end, so that the last one has had time to come back); one still
        not back counts as at least the time it has waited.
        """
        time.sleep(max(0.0, (end_ns - time.monotonic_ns()) / 1e9 + 1.0))
        now = time.monotonic_ns()
        with self._lock:
            rtts = [rtt for sent, rtt in self.times if start_ns <= sent < end_ns]
            waiting = [now - sent for sent in self.sent.values() if start_ns <= sent < end_ns]
        out = {"round trips": float(len(rtts) + len(waiting))}
        out.update({f"round trip {k}": v for k, v in percentiles(rtts + waiting).items()})
        out["not back"] = float(len(waiting))
        return out

    def post(self, text: str) -> None:
        """
        Send a message of this text (not timed).
        """
        self.sock.setblocking(True)
        self.sock.sendall(request("msg", text))
        self.sock.setblocking(False)

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(5)
        self.sock.close()


def _legacy_main(conn, port: int, name: str, size: int, source: str) -> None:
    """
    A legacy reader process: log in with bare JSON, then read with
    C{recv(size)} as data comes, while obeying the controller's commands
    (L{Legacy}).
    """
    log = ReadLog()
    sock = _connect(port, source)
    sock.sendall(request("login", name, newline=False))
    login_sent = time.monotonic_ns()
    mark = cpu_wait()
    last_read = time.monotonic()
    closed_at: Optional[int] = None
    pending: Optional[Tuple[str, Any, float]] = None
    while True:
        wait = 0.05 if pending is not None else None
        ready = [conn] if closed_at is not None else [sock, conn]
        readable, _, _ = select.select(ready, [], [], wait)
        if sock in readable:
            try:
                data = sock.recv(size)
            except OSError:
                data = b""
            now = time.monotonic_ns()
            if data:
                now_mark = cpu_wait()
                waited = None if mark is None or now_mark is None else now_mark - mark
                mark = now_mark
                last_read = time.monotonic()
                log.add(data, now, waited)
            else:
                closed_at = now
        if conn in readable:
            cmd, arg = conn.recv()
            if cmd == "send":
                try:
                    sock.sendall(arg)
                except OSError:
                    pass
                mark = cpu_wait()
            else:
                pending = (cmd, arg, time.monotonic())
        if pending is None:
            continue
        cmd, arg, since = pending
        now_s = time.monotonic()
        if cmd == "until":
            what, timeout = arg
            found = log.first(what)
            if found is not None or closed_at is not None or now_s - since > timeout:
                conn.send(found)
                pending = None
        elif cmd == "quiet":
            quiet, timeout = arg
            idle = now_s - max(last_read, since)
            if closed_at is not None or idle >= quiet or now_s - since > timeout:
                conn.send(None)
                pending = None
        elif cmd == "stop":
            sock.close()
            result = log.summary()
            result.update(login_sent=login_sent, closed_at=closed_at)
            conn.send(result)
            return


class Legacy:
    """
    The controller's handle on a legacy reader process (L{_legacy_main}).
    """

    def __init__(self, port: int, name: str, size: int = 4096, source: str = "127.0.0.1"):
        ctx = multiprocessing.get_context("fork")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_legacy_main, args=(child, port, name, size, source), daemon=True
        )
        self._proc.start()
        self._result: Optional[Dict[str, Any]] = None

    def send(self, word: str, content: Any = None) -> None:
        self._pipe.send(("send", request(word, content, newline=False)))

    def until_kind(self, kind: str, timeout: float) -> Optional[int]:
        """
        Wait for the first response of this kind; when it came (ns), or None.
        """
        self._pipe.send(("until", (kind, timeout)))
        return self._pipe.recv()

    def until_stamp(self, stamp: int, timeout: float) -> Optional[int]:
        """
        Wait for the message sent at C{stamp}; when it came (ns), or None.
        """
        self._pipe.send(("until", (stamp, timeout)))
        return self._pipe.recv()

    def quiet(self, seconds: float, timeout: float) -> None:
        """
        Wait until nothing has arrived for C{seconds}, counted from now at
        the earliest (at most C{timeout}).
        """
        self._pipe.send(("quiet", (seconds, timeout)))
        self._pipe.recv()

    def stop(self) -> Dict[str, Any]:
        """
        Stop reading and close; what was read (L{ReadLog.summary}). Only
        the first call asks the process.
        """
        if self._result is None:
            self._pipe.send(("stop", None))
            self._result = self._pipe.recv()
            self._proc.join(10)
        return self._result


@contextlib.contextmanager
def legacy_readers(port: int, sizes: Sequence[int]) -> Iterator[Dict[int, Legacy]]:
    """
    A legacy reader per C{recv()} size, logged in (its login read), stopped
    on the way out.
    """
    readers: Dict[int, Legacy] = {}
    try:
        for size in sizes:
            readers[size] = Legacy(port, f"reader{size}", size)
            readers[size].quiet(0.5, 30)
        yield readers
    finally:
        for reader in readers.values():
            reader.stop()


def finish(readers: Dict[int, Legacy], quiet: float) -> Dict[int, Dict[str, Any]]:
    """
    Wait until nothing has reached each reader for C{quiet} seconds, then
    stop it; what each read.
    """
    results = {}
    for size, reader in readers.items():
        reader.quiet(quiet, 60)
        results[size] = reader.stop()
    return results


def read_figures(result: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """
    The figures of a legacy reader's reads: how many, and how many were not
    exactly one response (of those with more than one, how many followed a
    CPU wait of the reader itself).
    """
    classes = result["classes"]
    responses = result["responses"]
    return {
        f"{prefix}reads": float(result["reads"]),
        f"{prefix}reads not one response": float(result["reads"] - classes["one"]),
        f"{prefix}reads >1 response": float(classes["several"]),
        f"{prefix}  of them after a reader CPU wait": float(result["late several"]),
        f"{prefix}reads cut/invalid JSON": float(classes["cut"]),
        f"{prefix}reads white space only": float(classes["blank"]),
        f"{prefix}largest response bytes": float(max((r["size"] for r in responses), default=0)),
        f"{prefix}dropped": 1.0 if result["closed_at"] is not None else 0.0,
    }


# Scenarios: each runs once against one server and returns its figures.


def startup(kind: str, dbs: Databases, messages: int, length: int, old: str) -> Dict[str, float]:
    """
    Start on a copy of a first-release database of C{messages} messages
    (our server: then again on the upgraded file): seconds until a login
    is accepted with its history (its C{info}; logins are tried from the
    moment the server listens, every 10 ms, and one answered with an empty
    history is counted and tried again), peak RSS then, and after that
    login's history has been read.
    """
    path = dbs.copy(messages, length)
    out: Dict[str, float] = {}
    try:
        # Our first start upgrades the first release's schema; the second
        # (like every start of the others) opens it as it is.
        starts = ("first start (upgrade)", "start") if kind == "chat" else ("start",)
        for label in starts:
            with Target(kind, path, old) as server:
                listening = server.wait_port()
                info_at, history_at, empty = login_with_history(server)
                peak_login = server.peak_mib()
                out[f"{label}: listening s"] = listening
                out[f"{label}: login with its history s"] = info_at - server.started
                out[f"{label}: logins before, answered with no history"] = float(empty)
                out[f"{label}: peak RSS to login MiB"] = peak_login
                out[f"{label}: login's history read s"] = history_at - info_at
                out[f"{label}: peak RSS after one login MiB"] = server.peak_mib()
    finally:
        Databases.remove(path)
    return out


def _open_silent(port: int, count: int, label: str, rcvbuf: int = 0) -> List[socket.socket]:
    """
    C{count} clients that log in (reading a stream) and never read, from
    several loopback addresses (at most 50 per address); with C{rcvbuf},
    that receive buffer (set before connecting, so the window is small).
    """
    addrs = sources(-(-count // 50))
    socks = []
    for i in range(count):
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(30)
        sock.bind((addrs[i // 50], 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request("login", f"silent{label}x{i}"))
        socks.append(sock)
    return socks


class PeakRSS(threading.Thread):
    """
    Samples a server's RSS every 50 ms until stopped: the peak, and whether
    it passed C{cap_mib} (then the scenario gives up early).
    """

    def __init__(self, server: Target, cap_mib: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.cap_mib = cap_mib
        self.peak = server.rss_mib()
        self.over = threading.Event()
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = self.server.rss_mib()
            except OSError:
                return
            self.peak = max(self.peak, rss)
            if rss > self.cap_mib:
                self.over.set()
            self._halt.wait(0.05)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak


def _silent(
    server: Target,
    pinger: Pinger,
    label: str,
    rcvbuf: int,
    fds0: int,
    hold: float,
    cap_mib: float,
) -> Dict[str, float]:
    """
    100 clients log in and never read; they are held C{hold} seconds (and
    until the server is idle: the previous release copies the history per
    login), then close. RSS before, at the peak, held and after; the
    pinger's round trips meanwhile.
    """
    rss0 = server.rss_mib()
    start = time.monotonic_ns()
    sampler = PeakRSS(server, cap_mib)
    silent = _open_silent(server.port, 100, label, rcvbuf)
    if not sampler.over.wait(hold):
        _settle(server, timeout=120)
    rss_held = server.rss_mib()
    logins = len(re.findall(rf"silent{label}x\d+ logged in", server.log_text()))
    for sock in silent:
        sock.close()
    _gone(server, fds0)
    out = {
        "logged in (server's log)": float(logins),
        "RSS before MiB": rss0,
        "RSS peak MiB": sampler.stop(),
        "RSS with the 100 held MiB": rss_held,
        "growth MiB": rss_held - rss0,
        "RSS after they are gone MiB": server.rss_mib(),
        "after - before MiB": server.rss_mib() - rss0,
        "stopped at the RSS cap": 1.0 if sampler.over.is_set() else 0.0,
    }
    out.update(pinger.between(start, time.monotonic_ns()))
    return {f"{label}: {k}": v for k, v in out.items()}


def _gone(server: Target, fds: int, timeout: float = 60) -> None:
    """
    Wait until the server holds no more descriptors than C{fds}, then until
    it is idle.
    """
    deadline = time.monotonic() + timeout
    while server.fds() > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    _settle(server)


def stall(
    kind: str,
    dbs: Databases,
    messages: int,
    old: str,
    hold: float = 5,
    bursts: int = 5,
    cap_mib: float = 8192,
) -> Dict[str, float]:
    """
    On a history of C{messages}: a client sends a message every 150 ms and
    times its round trip while (A) 100 clients log in and never read, are
    held, then close (L{_silent}; again with small receive buffers); and
    (B) 50 clients log in at once, read their history and leave, C{bursts}
    times.
    """
    out: Dict[str, float] = {}
    with serving(kind, dbs, messages, old) as server:
        pinger = Pinger(server.port)
        pinger.start()
        try:
            t0 = time.monotonic_ns()
            time.sleep(3)
            out.update(
                {f"idle: {k}": v for k, v in pinger.between(t0, time.monotonic_ns()).items()}
            )
            fds0 = server.fds()
            # A: 100 that never read (A4k: with a 4 KiB receive buffer,
            # so that the kernel takes little and the server holds the
            # rest).
            for label, rcvbuf in (("A", 0), ("A4k", 4096)):
                out.update(_silent(server, pinger, label, rcvbuf, fds0, hold, cap_mib))
            tb = time.monotonic_ns()
            # B: 50 at once, each reading its history, then leaving; five
            # times, a second apart.
            sampler = PeakRSS(server, cap_mib)
            ok = []
            for burst in range(bursts):
                workers = Workers(1, "127.0.0.1", server.port)
                try:
                    addrs = sources(2)
                    specs = [(f"burst{burst}x{i}", "recv", addrs[i % 2], False) for i in range(50)]
                    res = workers.call(0, "connect", specs=specs, concurrency=50, timeout=300)
                    ok.append(res)
                finally:
                    workers.close()
                _gone(server, fds0)
                time.sleep(1.0)
            tc = time.monotonic_ns()
            out["B: logged in, of 50 (each burst)"] = min(r["ok"] for r in ok)
            out["B: seconds for all 50 (slowest burst)"] = max(r["seconds"] for r in ok)
            out["B: RSS peak MiB"] = sampler.stop()
            out["B: RSS after MiB"] = server.rss_mib()
            out.update({f"B: {k}": v for k, v in pinger.between(tb, tc).items()})
            out["ping client dropped"] = 1.0 if pinger.closed else 0.0
        finally:
            pinger.stop()
    return out


def _history_before(responses: List[Dict[str, Any]], end_ns: Optional[int]) -> List[Dict]:
    return [r for r in responses if r["kind"] == "history" and (end_ns is None or r["t"] < end_ns)]


def legacy_login(
    kind: str, dbs: Databases, messages: int, old: str, deadline: float = 150
) -> Dict[str, float]:
    """
    A legacy client (C{recv(4096)}) logs in on a history of C{messages};
    when its C{info} arrives another client sends a message: when that
    arrives (at most C{deadline} s), and how long the history before it
    took, in how many responses.
    """
    with serving(kind, dbs, messages, old) as server:
        sender = Pinger(server.port, "sender")
        reader = Legacy(server.port, "legacy")
        try:
            info = reader.until_kind("info", 60)
            stamp = time.monotonic_ns()
            sender.post(f"T{stamp} live")
            arrived = reader.until_stamp(stamp, deadline)
            reader.quiet(1.0, 10)
        finally:
            result = reader.stop()
            sender.stop()
    history = _history_before(result["responses"], arrived)
    out = {
        "live message arrived": 0.0 if arrived is None else 1.0,
        "live message after s": (arrived - stamp) / 1e9 if arrived else float("nan"),
        "login to info s": (info - result["login_sent"]) / 1e9 if info else float("nan"),
        "history responses": float(len(history)),
        "history items": float(sum(r.get("items", 0) for r in history)),
        "history bytes": float(sum(r["size"] for r in history)),
        "whole history s": (history[-1]["t"] - result["login_sent"]) / 1e9
        if history
        else float("nan"),
    }
    if result["closed_at"] is not None:
        out["dropped after s"] = (result["closed_at"] - result["login_sent"]) / 1e9
    out.update(read_figures(result))
    return out


def legacy_chat(
    kind: str,
    dbs: Databases,
    seconds: float,
    chatters: int = 15,
    rate: float = 10.0,
    old: str = OLD,
) -> Dict[str, float]:
    """
    A legacy client (C{recv(4096)}) reads promptly while C{chatters}
    clients send C{rate} messages a second each for C{seconds}: dropped or
    not, reads that were not one response, and what it got of the chat.
    """
    path = os.path.join(dbs.dir, f"chat-{kind}.sqlite3")
    try:
        with Target(kind, path, old) as server:
            server.wait_port()
            reader = Legacy(server.port, "legacy")
            workers = Workers(1, "127.0.0.1", server.port)
            try:
                reader.quiet(0.5, 10)
                specs = [(f"chatter{i}", "send", "127.0.0.1", False) for i in range(chatters)]
                if workers.call(0, "connect", specs=specs)["ok"] != chatters:
                    raise RuntimeError("not every chatter logged in")
                start = time.monotonic_ns()
                workers.call(0, "paced", rate=rate * chatters)
                time.sleep(seconds)
                workers.call(0, "stop")
                end = time.monotonic_ns()
                sent = workers.call(0, "counts")["sent"]
                reader.quiet(2.0, 30)
            finally:
                result = reader.stop()
                workers.close()
    finally:
        Databases.remove(path)
    responses = result["responses"]
    stamps = [(r["t"], s) for r in responses for s in r.get("stamps", ())]
    latencies = [t - s for t, s in stamps if start <= s <= end]
    errors = [r["text"] for r in responses if r["kind"] == "error"]
    out = {
        "messages sent": float(sent),
        "messages sent/s": sent / ((end - start) / 1e9),
        "messages received": float(len({s for _, s in stamps})),
        "message responses": float(sum(1 for r in responses if r["kind"] == "message")),
        "history responses (coalesced)": float(sum(1 for r in responses if r["kind"] == "history")),
        "errors": float(len(errors)),
    }
    out.update({f"latency {k}": v for k, v in percentiles(latencies).items()})
    if result["closed_at"] is not None:
        out["dropped after s"] = (result["closed_at"] - start) / 1e9
    out.update(read_figures(result))
    if errors:
        print(f"  errors to the legacy client: {errors[:3]}", file=sys.stderr)
    return out


def names(
    kind: str, dbs: Databases, users: int = 3000, name_length: int = 30, old: str = OLD
) -> Dict[str, float]:
    """
    C{users} users with names of C{name_length} characters are logged in;
    legacy clients reading with C{recv(4096)} and C{recv(1024)} each send
    C{names}: is every read one valid response, and are all names there?
    """
    path = os.path.join(dbs.dir, f"names-{kind}.sqlite3")
    procs = 3
    try:
        with Target(kind, path, old) as server:
            server.wait_port()
            workers = Workers(procs, "127.0.0.1", server.port)
            try:
                addrs = sources(-(-users // 50))
                expected = [f"u{i:05d}".ljust(name_length, "x") for i in range(users)]
                per = -(-users // procs)
                for w in range(procs):
                    specs = [
                        (expected[i], "recv", addrs[i // 50], False)
                        for i in range(w * per, min(users, (w + 1) * per))
                    ]
                    workers.pipes[w].send(
                        ("connect", {"specs": specs, "concurrency": 20, "timeout": 300})
                    )
                ok = sum(p.recv()["ok"] for p in workers.pipes)
                with legacy_readers(server.port, (4096, 1024)) as readers:
                    expected += [f"reader{size}" for size in readers]
                    # Both ask while both are logged in: each answer lists both.
                    for reader in readers.values():
                        reader.send("names")
                    results = finish(readers, 1.5)
            finally:
                workers.close()
    finally:
        Databases.remove(path)
    out = {"users logged in": float(ok)}
    for size, result in results.items():
        infos = [r for r in result["responses"] if r["kind"] == "info"]
        # The login's info comes first; the rest answer names.
        answer = infos[1:]
        got = names_in(r["text"] for r in answer)
        prefix = f"recv({size}): "
        out[f"{prefix}info responses to names"] = float(len(answer))
        out[f"{prefix}names received"] = float(len(got))
        out[f"{prefix}all names, each once"] = 1.0 if sorted(got) == sorted(expected) else 0.0
        out.update(read_figures(result, prefix))
    return out


def emoji(kind: str, dbs: Databases, count: int = 1000, old: str = OLD) -> Dict[str, float]:
    """
    A message of C{count} emoji to legacy clients reading with
    C{recv(4096)} and C{recv(1024)}, and to a client that reads a stream:
    valid JSON per read, size, and how much of the text arrived.
    """
    path = os.path.join(dbs.dir, f"emoji-{kind}.sqlite3")
    try:
        with Target(kind, path, old) as server:
            server.wait_port()
            # With a name of 32 characters (the longest by default) the
            # response is 4,115 bytes, as in the issue: over recv(4096).
            sender = Pinger(server.port, SENDER)
            try:
                with legacy_readers(server.port, (4096, 1024)) as readers:
                    stream_got = _stream_echo(sender, EMOJI * count)
                    results = finish(readers, 1.0)
            finally:
                sender.stop()
    finally:
        Databases.remove(path)
    out = {
        "stream client: response bytes": float(len(stream_got)),
        "stream client: emoji received": float(
            json.loads(stream_got)["content"].count(EMOJI) if stream_got else 0
        ),
    }
    for size, result in results.items():
        prefix = f"recv({size}): "
        whole = [r for r in result["responses"] if r["kind"] == "message"]
        out[f"{prefix}message responses"] = float(len(whole))
        out.update(read_figures(result, prefix))
        out[f"{prefix}emoji received"] = float(sum(r.get("emoji", 0) for r in whole))
        out[f"{prefix}marked shortened"] = float(sum(1 for r in whole if r.get("shortened")))
    return out


def _stream_echo(client: Pinger, text: str, timeout: float = 10) -> bytes:
    """
    Send C{text} from a stream client that is not pinging and return the
    response that brings it back, whole.
    """
    client.sock.setblocking(True)
    client.sock.settimeout(timeout)
    client.sock.sendall(request("msg", text))
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += client.sock.recv(65536)
        for line in buf.split(b"\n")[:-1]:
            if b'"response":"message"' in line and b'"sender":"%s"' % SENDER.encode() in line:
                return line + b"\n"
    return b""


def _history_texts(length: int) -> Callable[[int], str]:
    """
    Texts of C{length} characters; every fifth of emoji (4 bytes each in
    UTF-8) instead of filler.
    """

    def text(i: int) -> str:
        if i % 5 == 4:
            return f"{i:09d} " + EMOJI * (length - 10)
        return message_text(i, length)

    return text


def legacy_history(
    kind: str, dbs: Databases, messages: int, length: int, old: str = OLD
) -> Dict[str, float]:
    """
    Legacy clients reading with C{recv(1024)} and C{recv(4096)} log in on a
    history of C{messages} messages of C{length} characters (over 4 KiB in
    all): is every read one valid response, and do the newest messages
    arrive, in order?
    """
    texts = _history_texts(length)
    path = dbs.copy(messages, length, texts)
    try:
        with Target(kind, path, old) as server:
            server.wait_port()
            with legacy_readers(server.port, (1024, 4096)) as readers:
                results = finish(readers, 1.5)
    finally:
        Databases.remove(path)
    out: Dict[str, float] = {"history bytes (as string items)": float(
        sum(len(json.dumps(json.dumps({"timestamp": STAMP, "sender": "user00",
            "response": "message", "content": texts(i)}, ensure_ascii=False,
            separators=(",", ":")), ensure_ascii=False).encode()) for i in range(messages))
    )}  # fmt: skip
    for size, result in results.items():
        prefix = f"recv({size}): "
        history = [r for r in result["responses"] if r["kind"] == "history"]
        numbers = [n for r in history for n in r.get("numbers", ())]
        newest = list(range(messages - len(numbers), messages))
        out[f"{prefix}history responses"] = float(len(history))
        out[f"{prefix}messages received"] = float(len(numbers))
        out[f"{prefix}the newest, in order"] = 1.0 if numbers == newest else 0.0
        out.update(read_figures(result, prefix))
        out[f"{prefix}responses over 1024 bytes"] = float(
            sum(1 for r in result["responses"] if r["size"] > 1024)
        )
    return out


def login_cpu(
    kind: str, dbs: Databases, messages: int, logins: int, legacy_logins: int, old: str = OLD
) -> Dict[str, float]:
    """
    Server CPU (utime + stime) per login on a history of C{messages}:
    C{logins} clients that read a stream, then C{legacy_logins} bare-JSON
    ones (their paced history included), 4 at a time; each reads its
    history and stays.
    """
    out: Dict[str, float] = {}
    with serving(kind, dbs, messages, old) as server:
        workers = Workers(1, "127.0.0.1", server.port)
        try:
            # At most 50 connections per address (the default limit is 100).
            addrs = sources(-(-(logins + legacy_logins) // 50))
            for label, count, legacy in (
                ("stream", logins, False),
                ("legacy", legacy_logins, True),
            ):
                if not count:
                    continue
                specs = [
                    (f"{label}{i}", "recv", addrs[i % len(addrs)], legacy) for i in range(count)
                ]
                cpu0 = server.cpu()
                bytes0 = workers.call(0, "counts")["login_bytes"]
                res = workers.call(0, "connect", specs=specs, concurrency=4, timeout=600)
                # A legacy login's history goes out paced, about 1 s.
                time.sleep(3.0 if legacy else 0.5)
                _settle(server)
                cpu = server.cpu() - cpu0
                ok = res["ok"]
                sent = workers.call(0, "counts")["login_bytes"] - bytes0
                out[f"{label}: logins"] = float(ok)
                out[f"{label}: server CPU ms/login"] = cpu / ok * 1e3 if ok else float("nan")
                out[f"{label}: logins/s"] = ok / res["seconds"]
                out[f"{label}: bytes to the first history response's end"] = (
                    sent / ok if ok else float("nan")
                )
            out["server RSS MiB"] = server.rss_mib()
        finally:
            workers.close()
    return out


#: Each scenario: its default servers, history sizes and number of runs.
DEFAULTS = {
    "startup": ("chat,old,asyncio", [200_000, 1_000_000], 3),
    "stall": ("chat,old", [200_000, 1_000_000], 2),
    "legacy-login": ("chat,old", [200_000, 1_000_000], 2),
    "legacy-chat": ("chat,old", [0], 1),
    "names": ("chat,old,asyncio", [0], 2),
    "emoji": ("chat,old,asyncio", [0], 3),
    "legacy-history": ("chat,old,asyncio", [200], 3),
    "login-cpu": ("chat,old,asyncio", [1_000_000], 3),
}

#: Above this history the previous release is left out of these unless
#: named with --servers: 100 logins that never read would hold 100 copies
#: of a 200 MB history, and a legacy login of 1,000,000 messages takes
#: about ten minutes.
OLD_MAX = {"stall": 200_000, "legacy-login": 200_000}


def run(scenario: str, args: Any, repeat: Callable[..., None]) -> None:
    """
    Run C{scenario} for each history size, C{args.runs} times per server
    (via C{repeat(title, runs, one, kinds)}).
    """
    kinds_default, sizes_default, runs_default = DEFAULTS[scenario]
    kinds = (args.servers or kinds_default).split(",")
    runs = args.runs or runs_default
    old = args.old
    if "old" in kinds and not os.path.exists(f"{old}/.venv/bin/twistd"):
        raise SystemExit(f"--old {old}: no checkout with .venv/bin/twistd there (bench/README.rst)")
    dbs = Databases()
    try:
        for size in args.messages or sizes_default:
            these = kinds
            if args.servers is None and size > OLD_MAX.get(scenario, size):
                these = [k for k in kinds if k != "old"]
            one: Callable[[str], Dict[str, float]]
            if scenario == "startup":
                title = f"start-up with {size:,} stored messages of {args.length} characters"
                one = lambda kind, size=size: startup(kind, dbs, size, args.length, old)  # noqa: E731
            elif scenario == "stall":
                title = f"100 that never read, then 50 at once, on {size:,} stored messages"
                one = lambda kind, size=size: stall(kind, dbs, size, old)  # noqa: E731
            elif scenario == "legacy-login":
                title = f"a legacy login on {size:,} stored messages, and a live message"
                one = lambda kind, size=size: legacy_login(kind, dbs, size, old)  # noqa: E731
            elif scenario == "legacy-chat":
                title = f"a legacy reader while 15 chat at 10 messages/s each, {args.seconds:g} s"
                one = lambda kind: legacy_chat(kind, dbs, args.seconds, old=old)  # noqa: E731
            elif scenario == "names":
                title = f"names with {args.users:,} users to legacy readers"
                one = lambda kind: names(kind, dbs, args.users, old=old)  # noqa: E731
            elif scenario == "emoji":
                title = "a 1,000-emoji message to legacy readers"
                one = lambda kind: emoji(kind, dbs, old=old)  # noqa: E731
            elif scenario == "legacy-history":
                title = f"legacy logins on {size:,} stored messages of {args.length} characters"
                one = lambda kind, size=size: legacy_history(kind, dbs, size, args.length, old)  # noqa: E731
            else:
                title = f"server CPU per login on {size:,} stored messages"
                one = lambda kind, size=size: login_cpu(  # noqa: E731
                    kind,
                    dbs,
                    size,
                    args.logins or (2000 if kind == "chat" else 10),
                    args.legacy_logins if kind == "chat" else 0,
                    old,
                )
            repeat(title, runs, one, kinds=these)
    finally:
        dbs.close()
