"""
The benchmark scenarios. Each function runs one scenario once against one
server and returns its figures as a flat dict; L{bench.__main__} runs them
for both servers, several times, and prints medians, ranges and ratios.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Dict, List

from bench.loadgen import Workers, sources
from bench.servers import Server


def _pct(values: List[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6  # ms


def _sum(results: List[Dict], key: str) -> float:
    return sum(r[key] for r in results)


def _concurrency(kind: str) -> int:
    """
    Connections each generator process opens at once: ngIRCd listens with a
    backlog of 10, and a connection the backlog drops waits seconds for the
    retransmitted SYN.
    """
    return 3 if kind == "ircd" else 200


def _login_fanout(
    workers: Workers,
    n: int,
    senders: int,
    probes: int,
    legacy: bool,
    concurrency: int,
    rooms: str = "",
) -> int:
    """
    Log in C{senders} and C{probes} on worker 0 and the other receivers
    spread over the remaining workers, probes evenly interleaved in the
    server's broadcast order; each joins C{rooms} (separated by spaces) in
    turn after its login. Returns how many logged in, stopping at the
    first group of which some did not.
    """
    addrs = sources(16)
    spec = lambda name, role, i: (name, role, addrs[i % len(addrs)], legacy, rooms)  # noqa: E731
    ok = workers.call(0, "connect", specs=[spec(f"s{i}", "send", i) for i in range(senders)])["ok"]
    if ok < senders:
        return ok
    receivers = max(0, n - senders - probes)
    rworkers = list(range(1, len(workers.pipes))) or [0]
    chunk = -(-receivers // max(1, probes))
    done = 0
    for p in range(probes):
        count = min(chunk, receivers - done)
        per = -(-count // len(rworkers)) if count > 0 else 0
        for j, w in enumerate(rworkers):
            names = range(done + j * per, min(done + (j + 1) * per, done + count))
            if names:
                specs = [spec(f"r{i}", "recv", i) for i in names]
                got = workers.call(w, "connect", specs=specs, concurrency=concurrency)["ok"]
                ok += got
                if got < len(specs):
                    return ok
        done += count
        ok += workers.call(0, "connect", specs=[spec(f"p{p}", "probe", p)])["ok"]
    return ok


def _measure(
    server: Server, workers: Workers, n: int, duration: float, legacy: bool = False
) -> Dict[str, float]:
    """
    The figures of a load already started on C{workers}: after a second of
    warm-up, C{duration} seconds of deliveries (lines received), server CPU
    and probe latencies; C{n} is the recipients of one message.
    """
    time.sleep(1.0)  # warm up
    c0 = workers.all("record", on=True)
    cpu0 = server.cpu()
    t0 = time.monotonic()
    time.sleep(duration)
    c1 = workers.all("counts")
    cpu1 = server.cpu()
    elapsed = time.monotonic() - t0
    workers.all("stop")
    time.sleep(0.5)
    deliveries = _sum(c1, "lines") - _sum(c0, "lines")
    sent = _sum(c1, "sent") - _sum(c0, "sent")
    lat = [x for r in c1 for x in r["latencies"]]
    out = {
        "deliveries/s": deliveries / elapsed,
        "messages/s": deliveries / elapsed / n,
        "deliveries/message": deliveries / sent if sent else float("nan"),
        "server CPU us/delivery": (cpu1 - cpu0) / deliveries * 1e6 if deliveries else float("nan"),
        "server CPU cores": (cpu1 - cpu0) / elapsed,
        "latency p50 ms": _pct(lat, 0.50),
        "latency p99 ms": _pct(lat, 0.99),
        "latency samples": len(lat),
        "loadgen CPU cores": (_sum(c1, "cpu") - _sum(c0, "cpu")) / elapsed,
    }
    if legacy:
        reads = _sum(c1, "reads") - _sum(c0, "reads")
        multi = _sum(c1, "multi") - _sum(c0, "multi")
        out["reads with >1 response %"] = 100.0 * multi / reads if reads else float("nan")
    return out


def _dialect(kind: str) -> str:
    return "irc" if kind == "ircd" else "ktn"


def fanout(
    kind: str,
    n: int,
    senders: int,
    mode: str,
    window: int,
    rate: float,
    duration: float,
    procs: int,
    legacy: bool = False,
    probes: int = 10,
    rooms: str = "",
    caps: str = "",
) -> Dict[str, float]:
    """
    One message to N recipients. C{mode} "closed": C{window} messages in
    flight in total; "paced": C{rate} deliveries per second in total. With
    C{rooms}, every client joins them after its login and chats in the
    last (IRC: the channels; otherwise C{#bench}); C{caps}: the extensions
    each chat client asks for.
    """
    with Server(kind) as server:
        workers = Workers(procs, "127.0.0.1", server.port, _dialect(kind), caps)
        try:
            logged = _login_fanout(
                workers, n, senders, probes, legacy, _concurrency(kind), rooms=rooms
            )
            if logged < n:
                joined = f" and joined {rooms!r}" if rooms else ""
                raise RuntimeError(f"only {logged} of {n} clients logged in{joined} ({kind})")
            if mode == "closed":
                workers.call(0, "closed", window=max(1, window // senders))
            else:
                workers.call(0, "paced", rate=rate / n)
            out = _measure(server, workers, n, duration, legacy)
        finally:
            workers.close()
    return out


def _prefixed(prefix: str, figures: Dict[str, float]) -> Dict[str, float]:
    return {f"{prefix}: {key}": value for key, value in figures.items()}


ROOM_FIGURES = (
    "server CPU us/delivery",
    "deliveries/s",
    "deliveries/message",
    "latency p50 ms",
    "latency p99 ms",
    "latency samples",
    "server CPU cores",
    "loadgen CPU cores",
)


def lobby_and_room(kind: str, n: int, caps: str = "", **load) -> Dict[str, float]:
    """
    Issue 10's "a room of N members costs what the single chat costs
    today": the fan-out of N clients chatting in the lobby (they join
    nothing: today's path), then, on a fresh server, of N clients who all
    join the room C{r} and chat there (they stay in the lobby too). IRC:
    channel C{#bench}, then C{#bench} and C{#r}, chatting in C{#r}.
    C{load}: L{fanout}'s senders, mode, window, rate, duration and procs.
    Returns both sets of figures and the ratio room/lobby of CPU per
    delivery and of p99 latency.
    """
    room = "bench r" if kind == "ircd" else "r"
    out: Dict[str, float] = {}
    for variant, rooms in (("lobby", ""), ("room", room)):
        out.update(_prefixed(variant, _room_figures(kind, n, rooms, caps, **load)))
    _ratios(out, "room", "lobby")
    return out


def _room_figures(kind: str, n: int, rooms: str, caps: str, **load) -> Dict[str, float]:
    figures = fanout(kind, n, rooms=rooms, caps=caps, **load)
    return {key: figures[key] for key in ROOM_FIGURES if key in figures}


def _ratios(out: Dict[str, float], a: str, b: str) -> None:
    for key, name in (("server CPU us/delivery", "CPU/delivery"), ("latency p99 ms", "p99")):
        x, y = out.get(f"{a}: {key}"), out.get(f"{b}: {key}")
        if x is not None and y:
            out[f"{a}/{b} {name}"] = x / y


def _connect_all(workers: Workers, specs: Dict[int, List], concurrency: int) -> int:
    """
    Connect each worker's C{specs} at once, all workers in parallel;
    returns how many logged in.
    """
    for w, batch in specs.items():
        workers.pipes[w].send(
            ("connect", {"specs": batch, "concurrency": concurrency, "timeout": 300})
        )
    ok = 0
    for w in specs:
        result = workers.pipes[w].recv()
        if "error" in result:
            raise RuntimeError(f"worker {w}: {result['error']}")
        ok += result["ok"]
    return ok


def _login_rooms(
    workers: Workers, count: int, size: int, probes: int, concurrency: int
) -> Dict[int, int]:
    """
    C{count} rooms C{r0}, C{r1}, ... of C{size} members each: first, in
    each, C{size} - 2 receivers; then a probe in each of the first
    C{probes} rooms (a receiver in the others) and one sender, who joins
    last. Room k's probe and sender are on worker k mod the workers, the
    receivers spread over all. Returns how many logged in and the senders
    of each worker, by worker (total under key -1).
    """
    addrs = sources(32)
    procs = len(workers.pipes)
    receivers: Dict[int, List] = {w: [] for w in range(procs)}
    for i in range(count * (size - 2)):
        k = i // (size - 2)
        spec = (f"k{k}m{i % (size - 2)}", "recv", addrs[i % len(addrs)], False, f"r{k}")
        receivers[i % procs].append(spec)
    ok = _connect_all(workers, receivers, concurrency)
    last: Dict[int, List] = {w: [] for w in range(procs)}
    senders = {w: 0 for w in range(procs)}
    for k in range(count):
        role = "probe" if k < probes else "recv"
        last[k % procs].append((f"k{k}p", role, addrs[k % len(addrs)], False, f"r{k}"))
    for k in range(count):
        last[k % procs].append((f"k{k}s", "send", addrs[k % len(addrs)], False, f"r{k}"))
        senders[k % procs] += 1
    senders[-1] = ok + _connect_all(workers, last, concurrency)
    return senders


def many_rooms(
    kind: str,
    count: int,
    size: int,
    rate: float,
    duration: float,
    procs: int,
    caps: str = "",
    probes: int = 100,
) -> Dict[str, float]:
    """
    C{count} rooms of C{size} members, one sender in each, paced at
    C{rate} deliveries per second in total (C{rate} / C{size} messages a
    second, spread over the senders in turn by each generator process);
    latency from a probe in each of the first C{probes} rooms.
    """
    n = count * size
    with Server(kind) as server:
        workers = Workers(procs, "127.0.0.1", server.port, _dialect(kind), caps)
        try:
            senders = _login_rooms(workers, count, size, probes, _concurrency(kind))
            logged = senders.pop(-1)
            if logged < n:
                raise RuntimeError(
                    f"only {logged} of {n} clients logged in and joined their rooms ({kind})"
                )
            for w, k in senders.items():
                # This worker's share of the messages: one per its senders.
                workers.call(w, "paced", rate=rate / size * k / count)
            out = _measure(server, workers, size, duration)
        finally:
            workers.close()
    return {key: out[key] for key in ROOM_FIGURES if key in out}


def rooms_vs_room(
    kind: str, count: int, size: int, rate: float, duration: float, procs: int, caps: str = ""
) -> Dict[str, float]:
    """
    Issue 10's "1,000 rooms of 10 do not cost more per delivery than one
    room of 10,000": C{count} rooms of C{size} (L{many_rooms}), then, on a
    fresh server, one room C{r} of C{count} x C{size} members (the fan-out
    of clients who all joined it, 20 senders and 10 probes interleaved in
    the broadcast order), both paced at C{rate} deliveries per second.
    Returns both sets of figures and the ratios many/one of CPU per
    delivery and of p99 latency.
    """
    many, one = f"{count}x{size}", f"1x{count * size}"
    out = _prefixed(many, many_rooms(kind, count, size, rate, duration, procs, caps))
    figures = _room_figures(
        kind,
        count * size,
        "r",
        caps,
        senders=20,
        mode="paced",
        window=0,
        rate=rate,
        duration=duration,
        procs=procs,
    )
    out.update(_prefixed(one, figures))
    _ratios(out, many, one)
    return out


def idle(kind: str, k: int, procs: int, timeout: float = 120) -> Dict[str, float]:
    """
    K logged-in clients that then sit idle: memory per connection and
    login rate. K=0: as many as the server's file-descriptor limit allows.
    """
    with Server(kind) as server:
        time.sleep(0.5)
        rss0 = server.rss()
        cpu0 = server.cpu()
        if k == 0:
            k = server.fd_limit() - server.fds()
        # IRC clients register but join no channel: a channel of K members
        # costs K*K/2 JOIN notices.
        dialect = "irc-nojoin" if kind == "ircd" else "ktn"
        workers = Workers(procs, "127.0.0.1", server.port, dialect)
        try:
            addrs = sources(32)
            per = -(-k // procs)
            for w in range(procs):
                specs = [
                    (f"u{i}", "recv", addrs[i % len(addrs)], False)
                    for i in range(w * per, min(k, (w + 1) * per))
                ]
                workers.pipes[w].send(
                    (
                        "connect",
                        {"specs": specs, "concurrency": _concurrency(kind), "timeout": timeout},
                    )
                )
            res = [p.recv() for p in workers.pipes]
            elapsed = max(r["seconds"] for r in res)
            ok = sum(r["ok"] for r in res)
            cpu1 = server.cpu()
            time.sleep(1.0)
            rss1 = server.rss()
            fds = server.fds()
        finally:
            workers.close()
    return {
        "clients tried": k,
        "clients logged in": ok,
        "server fds": fds,
        "logins/s": ok / elapsed,
        "server CPU us/login": (cpu1 - cpu0) / ok * 1e6 if ok else float("nan"),
        "RSS empty MiB": rss0 / 2**20,
        "RSS MiB": rss1 / 2**20,
        "RSS KiB/connection": (rss1 - rss0) / 1024 / ok if ok else float("nan"),
    }


def _fill(path: str, count: int) -> None:
    """
    Create a database holding C{count} messages, in the first schema (v1,
    which the baseline uses and our server upgrades at start-up).
    """
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    with open(
        os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "chat",
            "storage",
            "schema",
            "v1.sql",
        )
    ) as f:
        db.executescript(f.read())
    text = "T0 " + "x" * 48
    db.executemany(
        "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
        (("2026-11-24T12:00:00Z", f"user{i % 100}", text) for i in range(count)),
    )
    db.commit()
    db.close()


def _settle(server: Server, quiet: float = 0.3, timeout: float = 60) -> None:
    """
    Wait until the server stops using CPU (its start-up is over).
    """
    deadline = time.monotonic() + timeout
    last = server.cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = server.cpu()
        if now == last:
            return
        last = now


def history(kind: str, size: int, logins: int, concurrency: int = 4) -> Dict[str, float]:
    """
    C{logins} clients log in, one after another (a few at a time), to a
    server whose history holds C{size} messages; each reads its history and
    leaves.
    """
    path = os.path.join("/tmp", f"bench-history-{os.getpid()}-{size}.sqlite3")
    _fill(path, size)
    try:
        with Server(kind, database=path) as server:
            _settle(server)
            rss0 = server.rss()
            workers = Workers(1, "127.0.0.1", server.port)
            try:
                cpu0 = server.cpu()
                specs = [(f"h{i}", "recv", "127.0.0.1", False) for i in range(logins)]
                res = workers.call(0, "connect", specs=specs, concurrency=concurrency, timeout=300)
                cpu1 = server.cpu()
                rss1 = server.rss()
                login_bytes = workers.call(0, "counts")["login_bytes"]
            finally:
                workers.close()
    finally:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
    ok = res["ok"]
    return {
        "logins": ok,
        "server CPU ms/login": (cpu1 - cpu0) / ok * 1e3 if ok else float("nan"),
        "MB sent/login": login_bytes / ok / 1e6 if ok else float("nan"),
        "logins/s": ok / res["seconds"],
        "server RSS MiB": rss1 / 2**20,
        "RSS growth MiB": (rss1 - rss0) / 2**20,
    }


def ingest(kind: str, senders: int, window: int, duration: float, procs: int) -> Dict[str, float]:
    """
    S clients, all senders, closed loop: how many messages per second are
    stored in SQLite (and broadcast to all S).
    """
    with Server(kind) as server:
        workers = Workers(procs, "127.0.0.1", server.port)
        try:
            addrs = sources(16)
            per = -(-senders // procs)
            for w in range(procs):
                specs = [
                    (f"s{i}", "send", addrs[i % len(addrs)], False)
                    for i in range(w * per, min(senders, (w + 1) * per))
                ]
                workers.call(w, "connect", specs=specs)
            workers.all("closed", window=max(1, window // senders))
            time.sleep(1.0)
            db = sqlite3.connect(f"file:{server.database}?mode=ro", uri=True)
            rows = lambda: db.execute("SELECT count(*) FROM messages").fetchone()[0]  # noqa: E731
            c0 = workers.all("counts")
            rows0, cpu0, t0 = rows(), server.cpu(), time.monotonic()
            time.sleep(duration)
            c1 = workers.all("counts")
            rows1, cpu1, elapsed = rows(), server.cpu(), time.monotonic() - t0
            db.close()
            workers.all("stop")
            time.sleep(0.5)
        finally:
            workers.close()
    stored = rows1 - rows0
    deliveries = _sum(c1, "lines") - _sum(c0, "lines")
    return {
        "messages stored/s": stored / elapsed,
        "messages broadcast/s": deliveries / senders / elapsed,
        "server CPU us/message": (cpu1 - cpu0) / stored * 1e6 if stored else float("nan"),
        "server CPU cores": (cpu1 - cpu0) / elapsed,
        "loadgen CPU cores": (_sum(c1, "cpu") - _sum(c0, "cpu")) / elapsed,
    }
