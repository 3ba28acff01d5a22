"""
The load generator: worker processes that hold many client connections and
a small controller that drives them.

Each worker is an asyncio process. Its connections log in, then count what
arrives in bulk (C{bytes.count(b"\\n")} per chunk: every response ends with
one newline), and only a few do more:

- I{receivers} count lines and nothing else;
- I{probes} also find the send time that senders put at the start of each
  message text (C{T<monotonic ns>}) and record the latency; CLOCK_MONOTONIC
  is one clock for every process on the machine;
- I{senders} are receivers that also send C{msg} requests, pre-encoded but
  for the time stamp, either closed loop (a window of messages in flight:
  one new message for each of its own that comes back) or paced (a share of
  a fixed rate, sent by a timer).

Bare-JSON ("legacy") connections send requests without a newline and count
how many reads brought more than one response (a C{recv()}-per-message
client would have crashed on each).

Rooms (issue 10): a connection may join rooms after it logs in (a C{join}
request each, or an IRC C{JOIN} each); its messages then go to the last
room it joined, and its login ends with the last room's history (names
list in IRC). A worker's connections may ask for extensions first
(C{cap}).

The controller (L{Workers}) starts workers with L{multiprocessing}, sends
them commands over pipes, and gathers counts, latencies and each worker's
own CPU time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import resource
import socket
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

LOGIN = b'{"request":"login","content":"%s"}'
JOIN = b'{"request":"join","content":"%s"}'
CAP = b'{"request":"cap","content":"%s"}'
MESSAGE = b'{"request":"msg","content":"T%d %s"}'
#: Filler so that a message is about as long as a typical chat line.
FILLER = b"x" * 48
# (also inside a history item, a JSON string: a legacy client gets messages
# that wait together as one history response)
_STAMP = re.compile(rb'(?:"content":"|\\"content\\":\\"| :)T(\d+) ')

# A chat message, as a response or as a history item.
_MESSAGE_RESPONSE = (b'"response":"message"', b'\\"response\\":\\"message\\"')

# The same load in IRC, to measure a C IRC server (ngIRCd) the same way:
# recipients are the members of one channel; the sender gets no echo.
IRC_LOGIN = b"NICK %s\r\nUSER %s 0 * :bench\r\n"
IRC_JOIN = b"JOIN #%s\r\n"
IRC_MESSAGE = b"PRIVMSG #%s :T%d %s\r\n"
#: The channel of an IRC connection that names no room.
IRC_CHANNEL = b"bench"

#: What ends a login, by dialect: the history response; the end of the
#: channel's names list; the end of the welcome (MOTD or its absence).
LOGIN_DONE = {
    "ktn": re.compile(rb'"response":"history"'),
    "irc": re.compile(rb" 366 "),
    "irc-nojoin": re.compile(rb" (?:376|422) "),
}
#: An error answering a request of the login (chat): e.g. a server that
#: does not know C{join}. (Inside a history item the quotes are escaped.)
LOGIN_ERROR = b'"response":"error"'


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Client(asyncio.Protocol):
    """
    One connection. C{role} is C{"recv"}, C{"probe"} or C{"send"};
    C{rooms} the rooms it joins after logging in, in order (IRC: the
    channels; none means C{#bench}).
    """

    def __init__(
        self, worker: "Worker", name: bytes, role: str, legacy: bool, rooms: Sequence[bytes] = ()
    ) -> None:
        self.worker = worker
        self.name = name
        self.role = role
        self.legacy = legacy
        self.end = b"" if legacy else b"\n"
        self.irc = worker.dialect != "ktn"
        if self.irc and not rooms and worker.dialect == "irc":
            rooms = (IRC_CHANNEL,)
        elif legacy:
            # Legacy clients send one request at a time, as those in the
            # field do: they stay in the lobby.
            rooms = ()
        self.rooms = tuple(rooms)
        self.channel = self.rooms[-1] if self.rooms else IRC_CHANNEL
        self.done_marker = LOGIN_DONE[worker.dialect]
        # Login ends with the last of these: the login's history and one
        # per room joined (chat), one names list per channel (IRC), or the
        # end of the welcome (IRC without channels).
        self.markers_left = (len(self.rooms) or 1) if self.irc else 1 + len(self.rooms)
        self.transport: Optional[asyncio.Transport] = None
        self.logged_in = asyncio.get_running_loop().create_future()
        self.login_buffer = b""
        self.in_history = False
        self.lines = 0
        self.multi = 0  # reads that brought more than one response (legacy)
        self.reads = 0
        self.tail = b""
        self.own = b":" + name + b"!" if self.irc else b'"sender":"' + name + b'","'
        # The same inside a history item, where a legacy client gets it.
        self.own_item = b'\\"sender\\":\\"' + name + b'\\",\\"'
        self.returned = 0
        self.sent = 0
        self.paced_due = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.worker.dialect == "ktn":
            requests = [LOGIN % self.name] + [JOIN % room for room in self.rooms]
            if self.worker.caps:
                requests.insert(0, CAP % self.worker.caps)
            transport.write(b"".join(r + self.end for r in requests))
        else:
            joins = b"".join(IRC_JOIN % room for room in self.rooms)
            transport.write(IRC_LOGIN % (self.name, self.name) + joins)

    def connection_lost(self, exc) -> None:
        self.worker.lost += 1
        if not self.logged_in.done():
            self.logged_in.set_result(False)

    def login_data(self, data: bytes) -> bytes:
        """
        While logging in: find each history response (names list) and its
        end, without keeping what may be megabytes of history. Returns what
        follows the last one, once found.
        """
        while True:
            if not self.in_history:
                buf = self.login_buffer + data
                match = self.done_marker.search(buf)
                error = buf.find(LOGIN_ERROR) if not self.irc else -1
                if error >= 0 and (match is None or error < match.start()):
                    self.logged_in.set_result(False)
                    self.transport.abort()
                    return b""
                if match is None:
                    self.worker.login_bytes += len(data)
                    self.login_buffer = buf[-32:]
                    return b""
                at = match.start()
                self.worker.login_bytes += len(data) - (len(buf) - at)
                self.in_history = True
                self.login_buffer = b""
                data = buf[at:]
            end = data.find(b"\n")
            if end < 0:
                self.worker.login_bytes += len(data)
                return b""
            self.worker.login_bytes += end + 1
            data = data[end + 1 :]
            self.in_history = False
            self.markers_left -= 1
            if self.markers_left <= 0:
                self.logged_in.set_result(True)
                return data

    def data_received(self, data: bytes) -> None:
        if not self.logged_in.done():
            data = self.login_data(data)
            if not data:
                return
        n = data.count(b"\n")
        if self.legacy:
            # Messages that wait together come as one history response:
            # count messages, in whole responses, not lines.
            self.reads += 1
            if n > 1:
                self.multi += 1
        else:
            self.lines += n
            if self.role == "recv":
                return
        buf = self.tail + data
        cut = buf.rfind(b"\n") + 1
        self.tail = buf[cut:]
        if not cut:
            return
        whole = buf[:cut]
        if self.legacy:
            self.lines += sum(map(whole.count, _MESSAGE_RESPONSE))
            if self.role == "recv":
                return
        if self.role == "probe":
            if self.worker.recording:
                now = time.monotonic_ns()
                self.worker.latencies.extend(now - int(t) for t in _STAMP.findall(whole))
            if self is self.worker.mirror:
                # IRC does not echo a message to its sender: this probe
                # tells each sender of the worker when its messages arrive.
                for sender in self.worker.irc_senders:
                    k = whole.count(sender.own)
                    if k:
                        sender.returned += k
                        if self.worker.mode == "closed":
                            sender.send(k)
        else:
            k = whole.count(self.own)
            if self.legacy:
                k += whole.count(self.own_item)
            if k:
                self.returned += k
                if self.worker.mode == "closed":
                    self.send(k)

    def send(self, k: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        now = time.monotonic_ns()
        if self.irc:
            self.transport.write(IRC_MESSAGE % (self.channel, now, FILLER) * k)
        elif self.legacy:
            for _ in range(k):
                self.transport.write(MESSAGE % (now, FILLER))
        else:
            self.transport.write(b"\n".join([MESSAGE % (now, FILLER)] * k) + b"\n")
        self.sent += k


class Worker:
    """
    The asyncio side of one worker process.
    """

    def __init__(self, conn, host: str, port: int, dialect: str = "ktn", caps: bytes = b"") -> None:
        self.dialect = dialect
        self.caps = caps
        self.mirror: Optional[Client] = None
        self.irc_senders: List[Client] = []
        self.conn = conn
        self.host = host
        self.port = port
        self.clients: List[Client] = []
        self.recording = False
        self.latencies: List[int] = []
        self.mode = "idle"
        self.lost = 0
        self.login_bytes = 0
        self.pacer: Optional[asyncio.Task] = None
        self.done = asyncio.get_running_loop().create_future()

    def senders(self) -> List[Client]:
        return [c for c in self.clients if c.role == "send"]

    async def connect(self, specs: Sequence[Tuple], concurrency: int, timeout: float):
        """
        Connect and log in C{specs} (name, role, source address, legacy and,
        optionally, the rooms to join, separated by spaces) in order, at
        most C{concurrency} at a time; with C{concurrency} 1 the server sees
        the logins in exactly this order.
        """
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        ok = failed = 0
        start = time.monotonic()
        deadline = start + timeout

        async def one(name: str, role: str, source: str, legacy: bool, rooms: str = "") -> None:
            nonlocal ok, failed
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise asyncio.TimeoutError
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(
                    socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1
                )
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, (self.host, self.port)), left)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _, client = await loop.create_connection(
                    lambda: Client(self, name.encode(), role, legacy, rooms.encode().split()),
                    sock=sock,
                )
                self.clients.append(client)
                if role == "probe" and self.mirror is None:
                    self.mirror = client
                if not await asyncio.wait_for(
                    client.logged_in, max(0.001, deadline - time.monotonic())
                ):
                    raise ConnectionError("closed before login")
                ok += 1
            except (OSError, asyncio.TimeoutError, ConnectionError):
                failed += 1
            finally:
                sem.release()

        tasks = []
        for spec in specs:
            await sem.acquire()
            tasks.append(asyncio.ensure_future(one(*spec)))
        if tasks:
            await asyncio.gather(*tasks)
        return {"ok": ok, "failed": failed, "seconds": time.monotonic() - start}

    def counts(self) -> Dict[str, Any]:
        lat, self.latencies = self.latencies, []
        return {
            "lines": sum(c.lines for c in self.clients),
            "returned": sum(c.returned for c in self.clients),
            "sent": sum(c.sent for c in self.clients),
            "multi": sum(c.multi for c in self.clients),
            "reads": sum(c.reads for c in self.clients),
            "cpu": cpu_seconds(),
            "latencies": lat,
            "lost": self.lost,
            "login_bytes": self.login_bytes,
            "now": time.monotonic(),
        }

    async def pace(self, rate: float) -> None:
        """
        Send this worker's share of C{rate} messages per second, spread
        over its senders in turn.
        """
        senders = self.senders()
        if not senders or rate <= 0:
            return
        start = time.monotonic()
        sent = 0
        i = 0
        while self.mode == "paced":
            due = int(rate * (time.monotonic() - start)) - sent
            for _ in range(due):
                senders[i % len(senders)].send(1)
                i += 1
            sent += max(due, 0)
            await asyncio.sleep(0.0005)

    async def command(self, cmd: str, args: Dict[str, Any]) -> Any:
        if cmd == "connect":
            return await self.connect(
                args["specs"], args.get("concurrency", 100), args.get("timeout", 60)
            )
        if cmd == "record":
            self.latencies = []
            self.recording = args["on"]
            return self.counts()
        if cmd == "counts":
            return self.counts()
        if cmd == "closed":
            self.mode = "closed"
            self.irc_senders = self.senders() if self.dialect != "ktn" else []
            for c in self.senders():
                c.send(args["window"])
            return None
        if cmd == "paced":
            self.mode = "paced"
            self.pacer = asyncio.ensure_future(self.pace(args["rate"]))
            return None
        if cmd == "stop":
            self.mode = "idle"
            return None
        if cmd == "close":
            for c in self.clients:
                if c.transport is not None:
                    c.transport.abort()
            self.clients = []
            return None
        if cmd == "exit":
            self.done.set_result(None)
            return None
        raise ValueError(cmd)


def _worker_main(conn, host: str, port: int, dialect: str, caps: bytes) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = Worker(conn, host, port, dialect, caps)
        busy = asyncio.Lock()

        async def handle(cmd, args):
            async with busy:
                try:
                    result = await worker.command(cmd, args)
                except Exception as e:  # report, keep the worker alive
                    result = {"error": repr(e)}
                conn.send(result)

        def readable() -> None:
            try:
                cmd, args = conn.recv()
            except EOFError:
                if not worker.done.done():
                    worker.done.set_result(None)
                return
            asyncio.ensure_future(handle(cmd, args))

        loop.add_reader(conn.fileno(), readable)
        await worker.done

    asyncio.run(main())


class Workers:
    """
    The controller's handle on a set of worker processes for one server.
    C{caps}: the extensions each chat connection asks for before it logs
    in, separated by spaces (none: it sends no C{cap}).
    """

    def __init__(
        self, count: int, host: str, port: int, dialect: str = "ktn", caps: str = ""
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes = []
        self.procs = []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=_worker_main,
                args=(child, host, port, dialect, caps.encode()),
                daemon=True,
            )
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def call(self, index: int, cmd: str, **args) -> Any:
        self.pipes[index].send((cmd, args))
        result = self.pipes[index].recv()
        if isinstance(result, dict) and "error" in result:
            raise RuntimeError(f"worker {index}: {result['error']}")
        return result

    def all(self, cmd: str, **args) -> List[Any]:
        for p in self.pipes:
            p.send((cmd, args))
        results = [p.recv() for p in self.pipes]
        for r in results:
            if isinstance(r, dict) and "error" in r:
                raise RuntimeError(r["error"])
        return results

    def close(self) -> None:
        for p in self.pipes:
            try:
                p.send(("close", {}))
                p.recv()
                p.send(("exit", {}))
                p.recv()
            except (OSError, EOFError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def sources(count: int = 16) -> List[str]:
    """
    Loopback source addresses to spread connections over, so that no one
    address runs out of ephemeral ports.
    """
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]
