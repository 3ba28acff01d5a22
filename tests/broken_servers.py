"""
Small chat servers with one deliberate flaw each, for testing the
conformance checker (L{chat.check}) against what servers in the field get
wrong.

    python -m tests.broken_servers FLAW

listens on 127.0.0.1, on a free port, and prints C{listening on PORT}.
Without a flaw (C{none}) it follows the standard the way our own server
does: pacing and history splitting for bare-JSON clients, string history
items, C{info} then C{history} at login, close after C{logout}. Each flaw in
L{FLAWS} changes exactly one thing. It is plain asyncio, not our server's
code, so the checker is not only tested against the code it grew up with.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional

#: Each flaw, and what it does wrong.
FLAWS = {
    "none": "follows the standard (no flaw)",
    "newline-only": "answers only requests that end with a newline (a line splitter)",
    "numeric-timestamp": "sends the timestamp as a number",
    "extra-key": 'adds a fifth key, "status", to every response',
    "list-names": "answers names with an info whose content is a list",
    "history-first": "sends the history before the info at login",
    "no-history": "sends no history at login",
    "history-objects": "sends history items as objects, not JSON strings",
    "history-plain": 'sends history items as plain text, "sender: text"',
    "deep-history-item": "gives newline clients a history item that is JSON nested 100000 deep",
    "duplicate-names": "lets a second client log in under a name in use",
    "isalnum-names": "checks usernames with Python's isalnum(), which accepts letters like æ",
    "no-echo": "broadcasts a message to everyone but its sender",
    "broadcast-to-all": "broadcasts to connections that have not logged in too",
    "names-before-login": "answers names before login",
    "help-missing-names": "leaves names out of the help text",
    "logout-stays-open": "does not close the connection after logout",
    "logout-keeps-name": "does not free the name at logout",
    "silent-on-malformed": "does not answer malformed JSON",
    "silent-on-non-object": "does not answer a JSON value that is not an object",
    "close-on-no-request": 'closes the connection after the error for an object without "request"',
    "close-on-unknown": "closes the connection after the error for an unknown request",
    "strict-content": 'refuses names with content "" or "None" or without content',
    "crash-on-drop": "dies when a logged-in client drops without logout",
    "keep-dropped-name": "does not free the name of a client that drops",
    "merged-login": "writes the info and the first history response together to bare-JSON clients",
    "big-history": "sends a bare-JSON client the whole history in one response",
    "big-help": "answers help with one info of over 4096 bytes",
}

PACING = 0.010
KEYS = ("timestamp", "sender", "response", "content")
USERNAME = re.compile(r"[A-Za-z0-9]+")
HISTORY_CHUNK = 3000
#: How deep the deep-history-item flaw nests its item: deeper than Python's
#: json module decodes.
DEEP = 100_000
HELP = "Requests: login <username>, logout, msg <message>, names, help"


class Server:
    def __init__(self, flaw: str) -> None:
        self.flaw = flaw
        self.users: Dict[str, "Client"] = {}
        self.clients: List["Client"] = []
        self.history: List[Dict[str, Any]] = []

    def response(self, sender: str, word: str, content: Any) -> Dict[str, Any]:
        timestamp: Any = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.flaw == "numeric-timestamp":
            timestamp = time.time()
        out = {"timestamp": timestamp, "sender": sender, "response": word, "content": content}
        if self.flaw == "extra-key":
            out["status"] = "ok"
        return out

    def history_items(self) -> List[Any]:
        if self.flaw == "history-objects":
            return list(self.history)
        if self.flaw == "history-plain":
            return [f"{m['sender']}: {m['content']}" for m in self.history]
        return [json.dumps(m) for m in self.history]


class Client(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.flaw = server.flaw
        self.buffer = ""
        self.username: Optional[str] = None
        self.legacy = True
        self.queue: List[bytes] = []
        self.pacing = False
        self.closing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.clients.append(self)

    def connection_lost(self, exc: Any) -> None:
        self.server.clients.remove(self)
        if self.username is not None:
            if self.flaw == "crash-on-drop":
                os._exit(1)
            if self.flaw != "keep-dropped-name":
                self.server.users.pop(self.username.lower(), None)

    # Sending

    def send(self, *responses: Dict[str, Any]) -> None:
        """
        Send responses: one per write, paced, to a bare-JSON client; at once
        to a newline client.
        """
        data = [json.dumps(r).encode() + b"\n" for r in responses]
        if not self.legacy:
            self.transport.write(b"".join(data))
            return
        self.queue.extend(data)
        if not self.pacing:
            self.pace()

    def send_together(self, *responses: Dict[str, Any]) -> None:
        self.queue.append(b"".join(json.dumps(r).encode() + b"\n" for r in responses))
        if not self.pacing:
            self.pace()

    def pace(self) -> None:
        if not self.queue:
            self.pacing = False
            if self.closing:
                self.transport.close()
            return
        self.pacing = True
        self.transport.write(self.queue.pop(0))
        asyncio.get_running_loop().call_later(PACING, self.pace)

    def close(self) -> None:
        if self.pacing:
            self.closing = True
        else:
            self.transport.close()

    def info(self, text: str) -> None:
        self.send(self.server.response("server", "info", text))

    def error(self, text: str) -> None:
        self.send(self.server.response("server", "error", text))

    # Receiving

    def data_received(self, data: bytes) -> None:
        self.buffer += data.decode("utf-8", "replace")
        if self.flaw == "newline-only":
            while "\n" in self.buffer:
                line, self.buffer = self.buffer.split("\n", 1)
                self.legacy = False
                self.handle_text(line)
            return
        decoder = json.JSONDecoder()
        while self.buffer.strip():
            text = self.buffer.lstrip()
            try:
                value, end = decoder.raw_decode(text)
            except ValueError:
                if text.rstrip().endswith(("}", "]")):
                    self.buffer = ""  # malformed: one request per write, so drop it
                    if self.flaw != "silent-on-malformed":
                        self.error("Malformed JSON")
                return
            rest = text[end:]
            if rest.startswith("\n") or rest.startswith("\r\n"):
                self.legacy = False
            self.buffer = rest
            self.handle(value)

    def handle_text(self, line: str) -> None:
        try:
            value = json.loads(line)
        except ValueError:
            if self.flaw != "silent-on-malformed":
                self.error("Malformed JSON")
            return
        self.handle(value)

    def handle(self, value: Any) -> None:
        if not isinstance(value, dict):
            if self.flaw != "silent-on-non-object":
                self.error("A request must be a JSON object")
            return
        word = value.get("request")
        if not isinstance(word, str):
            self.error('No "request" in the request')
            if self.flaw == "close-on-no-request":
                self.close()
            return
        content = value.get("content")
        if self.flaw == "strict-content" and word in ("names", "help") and content is not None:
            self.error("content must be null")
            return
        handler = getattr(self, f"do_{word}", None)
        if handler is None:
            self.error(f"Unknown request {word}")
            if self.flaw == "close-on-unknown":
                self.close()
            return
        allowed = ("login", "help") + (("names",) if self.flaw == "names-before-login" else ())
        if self.username is None and word not in allowed:
            self.error("Not logged in")
            return
        handler(content)

    def do_login(self, name: Any) -> None:
        server = self.server
        if self.username is not None:
            self.error("Already logged in")
            return
        if not isinstance(name, str) or not name:
            self.error("Invalid username")
            return
        valid = name.isalnum() if self.flaw == "isalnum-names" else USERNAME.fullmatch(name)
        if not valid:
            self.error("Invalid username")
            return
        if name.lower() in server.users and self.flaw != "duplicate-names":
            self.error("Username taken")
            return
        self.username = name
        server.users[name.lower()] = self
        info = server.response("server", "info", "Login successful")
        items = server.history_items()
        if self.flaw == "deep-history-item" and not self.legacy:
            # Not for bare-JSON clients: 200 KB in one response is another flaw.
            items.append("[" * DEEP + "]" * DEEP)
        if self.flaw == "no-history":
            self.send(info)
            return
        chunks: List[List[Any]] = [[]]
        size = 0
        for item in items:
            item_size = len(json.dumps(item)) + 2
            if self.legacy and chunks[-1] and size + item_size > HISTORY_CHUNK:
                if self.flaw != "big-history":
                    chunks.append([])
                    size = 0
            chunks[-1].append(item)
            size += item_size
        histories = [server.response("server", "history", c) for c in chunks]
        if self.flaw == "history-first":
            self.send(*histories, info)
        elif self.flaw == "merged-login" and self.legacy:
            self.send_together(info, histories[0])
            self.send(*histories[1:])
        else:
            self.send(info, *histories)

    def do_logout(self, content: Any) -> None:
        if self.flaw != "logout-keeps-name":
            self.server.users.pop(self.username.lower(), None)
        self.username = None
        self.info("Logged out")
        if self.flaw != "logout-stays-open":
            self.close()

    def do_msg(self, text: Any) -> None:
        if not isinstance(text, str) or not text.strip():
            self.error("msg needs a text")
            return
        message = self.server.response(self.username, "message", text)
        self.server.history.append({k: v for k, v in message.items() if k in KEYS})
        if self.flaw == "broadcast-to-all":
            recipients = list(self.server.clients)
        else:
            recipients = list(dict.fromkeys(self.server.users.values()))
        for client in recipients:
            if client is self and self.flaw == "no-echo":
                continue
            client.send(message)

    def do_names(self, content: Any) -> None:
        names = [c.username for c in self.server.users.values() if c.username]
        self.info(names if self.flaw == "list-names" else ", ".join(names))

    def do_help(self, content: Any) -> None:
        text = HELP.replace(", names", "") if self.flaw == "help-missing-names" else HELP
        if self.flaw == "big-help":
            text += "\n" + "More help. " * 500
        self.info(text)


async def main(flaw: str) -> None:
    server = Server(flaw)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Client(server), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    print(f"listening on {port}", flush=True)
    await listener.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in FLAWS:
        sys.stderr.write("usage: python -m tests.broken_servers FLAW\n")
        for name, what in FLAWS.items():
            sys.stderr.write(f"  {name:<20} {what}\n")
        raise SystemExit(2)
    try:
        asyncio.run(main(sys.argv[1]))
    except KeyboardInterrupt:
        pass
