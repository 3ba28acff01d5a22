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

Rooms, as small as they come: C{join <room>} makes that room the client's
only room (each client is in exactly one, C{lobby} at login) and answers
C{info} then the room's history; C{msg} and C{names} act on it.

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
        # The members (by lower-case name) and the history of each room.
        self.rooms: Dict[str, Dict[str, "Client"]] = {"lobby": {}}
        self.histories: Dict[str, List[str]] = {"lobby": []}
        self.db = None
        if database:
            self.db = sqlite3.connect(database, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY,"
                " timestamp TEXT, sender TEXT, content TEXT)"
            )
            columns = [row[1] for row in self.db.execute("PRAGMA table_info(messages)")]
            if "room" not in columns:  # a database made before rooms
                self.db.execute("ALTER TABLE messages ADD COLUMN room TEXT DEFAULT 'lobby'")
            for ts, sender, content, room in self.db.execute(
                "SELECT timestamp, sender, content, room FROM messages ORDER BY id"
            ):
                line = {
                    "timestamp": ts,
                    "sender": sender,
                    "response": "message",
                    "content": content,
                }
                self.histories.setdefault(room, []).append(_dumps(line))

    def enter(self, client: "Client", room: str) -> None:
        """
        Make C{room} the client's room, leaving the one it was in.
        """
        key = client.name.lower()
        if client.room is not None:
            members = self.rooms[client.room]
            members.pop(key, None)
            if not members and client.room != "lobby":
                del self.rooms[client.room]
        client.room = room
        self.rooms.setdefault(room, {})[key] = client
        self.histories.setdefault(room, [])

    def leave(self, client: "Client") -> None:
        self.users.pop(client.name.lower(), None)
        self.rooms.get(client.room, {}).pop(client.name.lower(), None)
        client.name = client.room = None

    def broadcast(self, sender: str, room: str, text: str) -> None:
        ts = stamp()
        if self.db is not None:
            self.db.execute(
                "INSERT INTO messages (timestamp, sender, content, room) VALUES (?, ?, ?, ?)",
                (ts, sender, text, room),
            )
        obj = {"timestamp": ts, "sender": sender, "response": "message", "content": text}
        line = _dumps(obj)
        self.histories[room].append(line)
        data = (line + "\n").encode("utf-8")
        for client in self.rooms[room].values():
            client.transport.write(data)


class Client(asyncio.Protocol):
    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.name: Optional[str] = None
        self.room: Optional[str] = None
        self.buffer = ""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self.name is not None:
            self.chat.leave(self)

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
            words = "login <username>, logout, msg <message>, names, join <room>, help"
            self.send("info", f"Requests: {words}")
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
                self.chat.enter(self, "lobby")
                self.send("info", "Login successful")
                self.send("history", self.chat.histories["lobby"])
        elif self.name is None:
            self.send("error", "Not logged in")
        elif word == "msg":
            if isinstance(content, str) and content.strip():
                self.chat.broadcast(self.name, self.room, content)
            else:
                self.send("error", "Message is empty")
        elif word == "join":
            if not isinstance(content, str) or not _USERNAME.fullmatch(content):
                self.send("error", "Invalid room name")
            else:
                room = content.lower()
                self.chat.enter(self, room)
                self.send("info", f"Joined {room}")
                self.send("history", self.chat.histories[room])
        elif word == "names":
            members = self.chat.rooms[self.room].values()
            self.send("info", ", ".join(c.name for c in members))
        elif word == "logout":
            self.chat.leave(self)
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
