"""
A small, plain asyncio broadcast server speaking the same KTN protocol: the
baseline every benchmark figure of the Twisted server is compared with.

It is what a competent programmer writes in an afternoon: one
C{asyncio.Protocol} per connection, a C{raw_decode} loop for framing, each
broadcast encoded once and written to every recipient with
C{transport.write}, the history kept as a list of encoded items and
serialised into the C{history} response at each login. With C{--database}
every message is inserted and committed in SQLite (WAL, synchronous=NORMAL,
one transaction per message) before it is broadcast. No pacing for bare-JSON
clients, no limits.

    python -m bench.baseline_server [--port 0] [--database FILE]

Prints C{listening on PORT} once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import time
from typing import Dict, List, Optional

_USERNAME = re.compile(r"[A-Za-z0-9]+")
_decoder = json.JSONDecoder()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def response(sender: str, kind: str, content) -> bytes:
    return (
        _dumps({"timestamp": stamp(), "sender": sender, "response": kind, "content": content})
        + "\n"
    ).encode("utf-8")


class Chat:
    def __init__(self, database: Optional[str]) -> None:
        self.users: Dict[str, "Client"] = {}
        self.history: List[str] = []
        self.db = None
        if database:
            self.db = sqlite3.connect(database, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY,"
                " timestamp TEXT, sender TEXT, content TEXT)"
            )
            for ts, sender, content in self.db.execute(
                "SELECT timestamp, sender, content FROM messages ORDER BY id"
            ):
                line = {
                    "timestamp": ts,
                    "sender": sender,
                    "response": "message",
                    "content": content,
                }
                self.history.append(_dumps(line))

    def broadcast(self, sender: str, text: str) -> None:
        ts = stamp()
        if self.db is not None:
            self.db.execute(
                "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
                (ts, sender, text),
            )
        obj = {"timestamp": ts, "sender": sender, "response": "message", "content": text}
        line = _dumps(obj)
        self.history.append(line)
        data = (line + "\n").encode("utf-8")
        for client in self.users.values():
            client.transport.write(data)


class Client(asyncio.Protocol):
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.name: Optional[str] = None
        self.buffer = ""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.name is not None:
            self.chat.users.pop(self.name.lower(), None)

    def send(self, kind: str, content) -> None:
        self.transport.write(response("server", kind, content))

    def data_received(self, data: bytes) -> None:
        self.buffer += data.decode("utf-8", "replace")
        buf, pos = self.buffer, 0
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos >= len(buf):
                break
            try:
                value, pos = _decoder.raw_decode(buf, pos)
            except ValueError:
                if len(buf) - pos > 65536:
                    self.transport.close()
                    return
                break
            self.handle(value)
        self.buffer = buf[pos:]

    def handle(self, value) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("request"), str):
            self.send("error", "Malformed request")
            return
        word, content = value["request"].lower(), value.get("content")
        if word == "help":
            self.send("info", "Requests: login <username>, logout, msg <message>, names, help")
        elif word == "login":
            if self.name is not None:
                self.send("error", "Already logged in")
            elif not isinstance(content, str) or not _USERNAME.fullmatch(content):
                self.send("error", "Invalid username")
            elif content.lower() in self.chat.users:
                self.send("error", "Username taken")
            else:
                self.name = content
                self.chat.users[content.lower()] = self
                self.send("info", "Login successful")
                self.send("history", self.chat.history)
        elif self.name is None:
            self.send("error", "Not logged in")
        elif word == "msg":
            if isinstance(content, str) and content.strip():
                self.chat.broadcast(self.name, content)
            else:
                self.send("error", "Message is empty")
        elif word == "names":
            self.send("info", ", ".join(c.name for c in self.chat.users.values()))
        elif word == "logout":
            self.chat.users.pop(self.name.lower(), None)
            self.name = None
            self.send("info", "Logged out")
            self.transport.close()
        else:
            self.send("error", f"Unknown request {word!r}")


async def main(port: int, host: str, database: Optional[str]) -> None:
    chat = Chat(database)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(chat), host, port, backlog=4096)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--database", default=None)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.host, args.database))
    except KeyboardInterrupt:
        pass
