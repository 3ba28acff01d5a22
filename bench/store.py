"""
Store-level benchmarks of chat.storage, with no server and no sockets:

    python -m bench.store ingest   # ~1 min: durable appends, batches of 1, 16, 256
    python -m bench.store window   # ~1 min: 1,000,000 messages: upgrade, open + window, prune

``ingest`` appends 100-character messages to a new database file for
``--duration`` seconds per case, ``--runs`` times, and prints medians
[min..max]: with one append in flight (each waits for the one before: the
worst case for a server) and with 8 in flight (appends asked while one is
being written share its transaction), beside the first release's
synchronous store (``chat.store``, on the calling thread) while it exists.

``window`` fills a database in the first release's schema with
``--messages`` messages, then measures in fresh processes: the one-time
upgrade; a start-up (open, then the newest 1,000 messages of the lobby)
with its time and peak memory beside a process that only imports; a page
of older history; and a prune that scans every message while appends go on
(their latency shows how long the store is held at a time). The file cache
is warm (the file was just written).

Each case runs in its own process (a reactor runs once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

from bench.__main__ import machine

CONTENT = "x" * 100
STAMP = "2026-11-24T22:00:00Z"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _react(main: Callable[[Any], Any]) -> None:
    """
    Run C{main(reactor)} and print the dict it fires with as JSON.
    """
    from twisted.internet import task

    def run(reactor):
        return main(reactor).addCallback(lambda result: print(json.dumps(result), flush=True))

    task.react(run)


def case_ingest(path: str, batch: str, depth: str, duration: str) -> None:
    """
    Appends of C{batch} messages, C{depth} in flight, for C{duration} s.
    """
    from twisted.internet import defer

    from chat.storage import Message, SQLiteStore

    batch_, depth_, duration_ = int(batch), int(depth), float(duration)

    @defer.inlineCallbacks
    def main(reactor):
        store = yield SQLiteStore.open(path, reactor)
        messages = [Message("lobby", STAMP, "user1", CONTENT) for _ in range(batch_)]
        stored = [0]
        end = time.perf_counter() + duration_

        @defer.inlineCallbacks
        def sender():
            while time.perf_counter() < end:
                yield store.append(messages)
                stored[0] += batch_

        start, cpu = time.perf_counter(), time.process_time()
        yield defer.gatherResults([sender() for _ in range(depth_)])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        yield store.close()
        return {
            "messages/s": stored[0] / elapsed,
            "appends/s": stored[0] / batch_ / elapsed,
            "CPU us/message": cpu / stored[0] * 1e6,
        }

    _react(main)


def case_ingest_sync(path: str, batch: str, duration: str) -> None:
    """
    The first release's synchronous SQLite store (chat.store), for
    comparison: each append on the calling thread.
    """
    from chat.store import Message, SQLiteStore

    batch_, duration_ = int(batch), float(duration)
    store = SQLiteStore(path)
    messages = [Message(STAMP, "user1", CONTENT) for _ in range(batch_)]
    stored = 0
    start, cpu = time.perf_counter(), time.process_time()
    end = start + duration_
    while time.perf_counter() < end:
        store.append(messages)
        stored += batch_
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    store.close()
    print(
        json.dumps(
            {
                "messages/s": stored / elapsed,
                "appends/s": stored / batch_ / elapsed,
                "CPU us/message": cpu / stored * 1e6,
            }
        )
    )


def case_imports() -> None:
    """
    Peak memory of a process that only imports what a start-up needs.
    """
    import twisted.internet.reactor  # noqa: F401

    import chat.storage  # noqa: F401

    print(json.dumps({"peak RSS MiB": _rss_mib()}))


def case_open(path: str) -> None:
    """
    Open (upgrading if needed) and read the newest 1,000 of the lobby.
    """
    from twisted.internet import defer

    from chat.storage import SQLiteStore

    @defer.inlineCallbacks
    def main(reactor):
        start = time.perf_counter()
        store = yield SQLiteStore.open(path, reactor)
        opened = time.perf_counter()
        window = yield store.recent("lobby", 1000)
        done = time.perf_counter()
        page_start = time.perf_counter()
        page = yield store.before("lobby", window[0].id // 2, 1000)
        page_done = time.perf_counter()
        yield store.close()
        assert len(window) == 1000 and len(page) == 1000, (len(window), len(page))
        return {
            "open s": opened - start,
            "open + recent(1000) s": done - start,
            "before(1000) from the middle ms": (page_done - page_start) * 1e3,
            "peak RSS MiB": _rss_mib(),
        }

    _react(main)


def case_prune(path: str, keep_last: str) -> None:
    """
    A prune by age that removes nothing but scans everything, then one by
    count; meanwhile an append of one message every 10 ms, whose latency
    is how long the store was held at a time.
    """
    from twisted.internet import defer, task

    from chat.storage import Message, SQLiteStore

    @defer.inlineCallbacks
    def main(reactor):
        store = yield SQLiteStore.open(path, reactor)
        latencies: List[float] = []

        def probe():
            sent = time.perf_counter()
            store.append([Message("lobby", STAMP, "probe", "p")]).addCallback(
                lambda _: latencies.append(time.perf_counter() - sent)
            )

        loop = task.LoopingCall(probe)
        loop.clock = reactor
        loop.start(0.01)
        result = {}
        for name, kwargs in (
            ("prune by age (scan all) s", {"keep_days": 36500}),
            ("prune by count s", {"keep_last": int(keep_last)}),
        ):
            start = time.perf_counter()
            removed = yield store.prune(**kwargs)
            result[name] = time.perf_counter() - start
            result[name.split(" s")[0] + " removed"] = removed
        loop.stop()
        yield store.close()
        latencies.sort()
        result["append latency during prune p50 ms"] = latencies[len(latencies) // 2] * 1e3
        result["append latency during prune p99 ms"] = latencies[int(len(latencies) * 0.99)] * 1e3
        result["append latency during prune max ms"] = latencies[-1] * 1e3
        return result

    _react(main)


CASES = {
    "ingest": case_ingest,
    "ingest-sync": case_ingest_sync,
    "imports": case_imports,
    "open": case_open,
    "prune": case_prune,
}


def case(*args: str) -> Dict[str, float]:
    """
    Run one case in a fresh process; its figures, and the process's whole
    time from start to exit.
    """
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.store", "_case", *args], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"case {args} failed:\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["whole process s"] = time.perf_counter() - start
    return figures


def summary(title: str, runs: List[Dict[str, float]]) -> None:
    print(f"\n== {title}  ({len(runs)} runs; median [min..max])")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(
            f"  {key:<40} {statistics.median(values):12.3f} [{min(values):.3f}..{max(values):.3f}]"
        )
    sys.stdout.flush()


def ingest(directory: str, runs: int, duration: float) -> None:
    def fresh() -> str:
        path = os.path.join(directory, "ingest.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        return path

    try:
        import chat.store  # noqa: F401

        sync = True
    except ImportError:
        sync = False
    for batch in (1, 16, 256):
        variants = {
            f"batches of {batch}, {depth} in flight": ("ingest", str(batch), str(depth))
            for depth in (1, 8, 64)
        }
        if sync:
            variants[f"batches of {batch}, first release's synchronous store"] = (
                "ingest-sync",
                str(batch),
            )
        # Alternating, so that a change in the machine's load hits all alike.
        runs_of: Dict[str, List[Dict[str, float]]] = {name: [] for name in variants}
        for _ in range(runs):
            for name, (kind, *args) in variants.items():
                runs_of[name].append(case(kind, fresh(), *args, str(duration)))
        for name, results in runs_of.items():
            summary(f"ingest: {name}", results)


def fill(path: str, count: int) -> None:
    """
    A database in the first release's schema (v1.sql, as chat/store.py
    made it) holding C{count} messages of 100 characters.
    """
    from chat.storage.sqlite import schema_script

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema_script(1))
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
        ((STAMP, f"user{i % 100}", f"{i:09d} " + "x" * 90) for i in range(count)),
    )
    db.execute("COMMIT")
    db.close()


def window(directory: str, runs: int, count: int) -> None:
    v1 = os.path.join(directory, "v1.db")
    start = time.perf_counter()
    fill(v1, count)
    print(
        f"\nfilled {count} messages in {time.perf_counter() - start:.1f} s:"
        f" {os.path.getsize(v1) / 2**20:.0f} MiB"
    )
    upgrades = []
    for n in range(runs):
        copy = os.path.join(directory, f"upgrade{n}.db")
        shutil.copy(v1, copy)
        upgrades.append(case("open", copy))
    summary(f"first open of a first-release database of {count} (upgrade, then window)", upgrades)
    upgraded = os.path.join(directory, "upgrade0.db")
    print(f"  size after upgrade: {os.path.getsize(upgraded) / 2**20:.0f} MiB")
    summary("a process that only imports", [case("imports") for _ in range(runs)])
    summary(f"start-up on {count} messages", [case("open", upgraded) for _ in range(runs)])
    summary(
        f"prune on {count} messages (one append every 10 ms meanwhile)",
        [case("prune", os.path.join(directory, f"upgrade{n}.db"), "500000") for n in range(runs)],
    )


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_case":
        CASES[argv[1]](*argv[2:])
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.store", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("scenario", choices=["ingest", "window"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per ingest case")
    parser.add_argument("--messages", type=int, default=1_000_000, help="stored (window)")
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args(argv)
    print(machine())
    print("command: python -m bench.store " + " ".join(argv))
    directory = tempfile.mkdtemp(prefix="bench-store-", dir=args.dir)
    try:
        if args.scenario == "ingest":
            ingest(directory, args.runs, args.duration)
        else:
            window(directory, args.runs, args.messages)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
