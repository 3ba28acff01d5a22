"""
twistd wiring for the chat server: C{twistd -n chat [options]}.
"""

from __future__ import annotations

from typing import Optional

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from chat.protocol import ChatServerFactory
from chat.service import ChatService, Limits
from chat.store import IMessageStore, MemoryStore, SQLiteStore

DEFAULT_PORT = "tcp:9998"
DEFAULT_DATABASE = "chat.sqlite3"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} is not a positive number")
    return number


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a chat server for the TTM4100 KTN JSON protocol. History is kept "
        f"in an SQLite file ({DEFAULT_DATABASE} in the working directory unless "
        "--database says otherwise) and survives restarts."
    )
    optParameters = [
        [
            "port",
            "p",
            DEFAULT_PORT,
            "Where to listen: a Twisted endpoint description such as "
            "tcp:9998, tcp:9998:interface=127.0.0.1, "
            "ssl:9999:privateKey=key.pem:certKey=cert.pem or unix:/tmp/chat.sock. "
            "A bare number means tcp:NUMBER.",
        ],
        [
            "database",
            "d",
            DEFAULT_DATABASE,
            "SQLite file that keeps the history; ':memory:' keeps nothing.",
        ],
        [
            "history-format",
            None,
            "string",
            "How history items are sent: 'string' (each a JSON-encoded message "
            "response, what most clients expect) or 'object'.",
        ],
        [
            "max-message-length",
            None,
            Limits.max_message_length,
            "Longest message accepted, in characters.",
            _positive,
        ],
        [
            "max-username-length",
            None,
            Limits.max_username_length,
            "Longest username accepted, in characters.",
            _positive,
        ],
    ]

    def postOptions(self) -> None:
        if self["port"].isdigit():
            self["port"] = f"tcp:{self['port']}"
        from twisted.internet import reactor

        try:
            endpoints.serverFromString(reactor, self["port"])
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(f"--port: not an endpoint description ({e})") from e
        if self["history-format"] not in ("string", "object"):
            raise usage.UsageError("--history-format must be 'string' or 'object'")


class ChatServerService(service.Service):
    """
    Opens the store and loads the history when started; tells the clients
    and closes the store when stopped.
    """

    log = Logger()

    def __init__(
        self,
        open_store,
        factory: ChatServerFactory,
        clock: IReactorTime,
        history_format: str,
        limits: Limits,
    ):
        self._open_store = open_store
        self._factory = factory
        self._clock = clock
        self._history_format = history_format
        self._limits = limits
        self.chat: Optional[ChatService] = None

    def startService(self) -> None:
        store: IMessageStore = self._open_store()
        self.chat = ChatService(store, self._clock, self._history_format, self._limits)
        self.chat.load()
        self._factory.service = self.chat
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        if self.chat is not None:
            self.chat.shutdown()
            self.chat.store.close()


class LoggingServerService(StreamServerEndpointService):
    """
    Listens on an endpoint and logs the address it got (useful with port 0).
    """

    log = Logger()

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        if port is not None:
            self.log.info("Listening on {address}", address=port.getHost())
        return port


def makeService(options: Options, reactor=None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    path = options["database"]

    def open_store() -> IMessageStore:
        return MemoryStore() if path == ":memory:" else SQLiteStore(path)

    limits = Limits(
        max_username_length=options["max-username-length"],
        max_message_length=options["max-message-length"],
    )
    top = service.MultiService()
    # The factory gets its chat core when the server service starts, which
    # happens before the reactor accepts the first connection.
    factory = ChatServerFactory(None, reactor)
    server = ChatServerService(open_store, factory, reactor, options["history-format"], limits)
    server.setServiceParent(top)
    listener = LoggingServerService(endpoints.serverFromString(reactor, options["port"]), factory)
    # As strports.service does: a port that cannot be had fails twistd at
    # start-up instead of being only logged.
    listener._raiseSynchronously = True
    listener.setServiceParent(top)
    return top
