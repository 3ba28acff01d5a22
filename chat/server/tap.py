"""
twistd wiring for the chat server: C{twistd -n chat [options]}.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from chat.core.history import DEFAULT_HISTORY_LIMIT
from chat.core.limits import Limits
from chat.core.service import ChatService
from chat.storage import IMessageStore, MemoryStore, SQLiteStore
from chat.storage.retention import RetentionService
from chat.transports.tcp import ChatServerFactory, ConnectionLimits

DEFAULT_PORT = "tcp:9998"
DEFAULT_DATABASE = "chat.sqlite3"


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{value} is not a positive number")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value} is negative")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"{value} is not a number of seconds")
    return number


def _days(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"{value} is not a positive number of days")
    return number


_CONNECTION = ConnectionLimits()


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
            "history-limit",
            None,
            DEFAULT_HISTORY_LIMIT,
            "How many of the latest messages a login gets (older ones are paged "
            "with the history request; a bare-JSON client gets the newest part "
            "it can read in about a second).",
            _count,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 (default: no metrics).",
        ],
        [
            "keep-days",
            None,
            None,
            "Remove messages older than this many days (checked at start-up and "
            "hourly, while serving). Default: keep them all.",
            _days,
        ],
        [
            "keep-messages",
            None,
            None,
            "Keep only the latest this many messages (of each room), removing "
            "older ones at start-up and hourly. Default: keep them all.",
            _count,
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
        [
            "max-request-size",
            None,
            _CONNECTION.max_request_size,
            "Largest request accepted, in bytes; a larger one gets an error and "
            "the connection is closed.",
            _positive,
        ],
        [
            "max-connections",
            None,
            _CONNECTION.max_connections,
            "Most connections open at once (0: no limit); more are refused with an error.",
            _count,
        ],
        [
            "max-connections-per-address",
            None,
            _CONNECTION.max_connections_per_address,
            "Most connections open at once from one IP address (0: no limit).",
            _count,
        ],
        [
            "login-timeout",
            None,
            _CONNECTION.login_timeout,
            "Seconds a connection may stay open without logging in (0: forever).",
            _seconds,
        ],
        [
            "max-send-queue",
            None,
            _CONNECTION.max_send_queue,
            "Bytes that may wait for a client that does not read (besides the "
            "history sent at login); past it the client is disconnected.",
            _positive,
        ],
        [
            "flood-rate",
            None,
            10.0,
            "Requests per second one client may make in the long run; faster "
            "requests wait their turn (0: no flood control).",
            _seconds,
        ],
        [
            "flood-burst",
            None,
            Limits.flood_burst,
            "Requests one client may make at once before --flood-rate applies.",
            _positive,
        ],
        [
            "max-waiting",
            None,
            Limits.max_waiting,
            "Requests that may wait for one client; past it requests get an "
            "error, and a client that goes on is disconnected.",
            _positive,
        ],
        [
            "keepalive-idle",
            None,
            _CONNECTION.keepalive_idle,
            "Seconds of silence before TCP keepalive probes a client (0: no keepalive).",
            _count,
        ],
        [
            "keepalive-interval",
            None,
            _CONNECTION.keepalive_interval,
            "Seconds between TCP keepalive probes.",
            _positive,
        ],
        [
            "keepalive-count",
            None,
            _CONNECTION.keepalive_count,
            "Unanswered keepalive probes after which a client is dropped.",
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
        if self["metrics"]:
            try:
                endpoints.serverFromString(reactor, self["metrics"])
            except (ValueError, KeyError, TypeError) as e:
                raise usage.UsageError(f"--metrics: not an endpoint description ({e})") from e
        if self["history-format"] not in ("string", "object"):
            raise usage.UsageError("--history-format must be 'string' or 'object'")


class ChatServerService(service.MultiService):
    """
    The chat server: when started, opens the store, builds the chat core
    on it and its TCP factory, and listens; the core holds the first
    requests until it has read the history window. When stopped, stops
    listening, tells the clients, stores what is pending and closes the
    store.

    @param open_store: called when the service starts, returns the store
        (usable at once) and a Deferred that fires when it is open; raises
        L{StoreError} if it cannot be had.
    @param endpoint: where to listen.
    """

    log = Logger()

    def __init__(
        self,
        open_store: Callable[[], Tuple[IMessageStore, Deferred]],
        endpoint: IStreamServerEndpoint,
        reactor: Any,
        history_format: str,
        limits: Limits,
        connection_limits: ConnectionLimits,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        keep_days: Optional[float] = None,
        keep_messages: Optional[int] = None,
        metrics_endpoint: Optional[IStreamServerEndpoint] = None,
    ) -> None:
        super().__init__()
        self._metrics_endpoint = metrics_endpoint
        self._keep_days = keep_days
        self._keep_messages = keep_messages
        self._open_store = open_store
        self._endpoint = endpoint
        self._reactor = reactor
        self._history_format = history_format
        self._limits = limits
        self._connection_limits = connection_limits
        self._history_limit = history_limit
        self.chat: Optional[ChatService] = None
        self.factory: Optional[ChatServerFactory] = None
        self._loaded: Deferred = succeed(None)

    def startService(self) -> None:
        store, opened = self._open_store()
        metrics = None
        if self._metrics_endpoint is not None:
            from chat.server.metrics import Metrics

            metrics = Metrics()
            store = metrics.timed(store)
        chat = self.chat = ChatService(
            store, self._reactor, self._history_format, self._limits, self._history_limit
        )
        if metrics is not None:
            metrics.watch(chat)
            web = LoggingServerService(self._metrics_endpoint, metrics.site(), "Metrics served at")
            web._raiseSynchronously = True
            web.setServiceParent(self)
        self._loaded = opened.addCallback(lambda _: chat.load())
        self._loaded.addCallback(lambda _: self._start_retention(chat))
        self._loaded.addErrback(self._cannot_start)
        self.factory = ChatServerFactory(chat, self._reactor, self._connection_limits)
        listener = LoggingServerService(self._endpoint, self.factory)
        # As strports.service does: a port that cannot be had fails twistd at
        # start-up instead of being only logged.
        listener._raiseSynchronously = True
        listener.setServiceParent(self)
        super().startService()

    def _start_retention(self, chat: ChatService) -> None:
        if self._keep_days is None and self._keep_messages is None:
            return
        if not self.running:
            return
        retention = WindowRetention(chat, self._keep_days, self._keep_messages)
        retention.setServiceParent(self)

    def _cannot_start(self, failure: Failure) -> None:
        if not self.running:
            return  # stopped before it finished starting
        self.log.error("Cannot read the history ({error}); stopping", error=failure.value)
        self._reactor.stop()

    def stopService(self) -> Deferred:
        """
        Stop listening, tell the clients, flush, wait (a bounded time) for
        the connections to close, then close the store.

        @return: a Deferred that fires when all that is done.
        """
        stopped = super().stopService()
        chat = self.chat
        if chat is None:
            return stopped

        def close(result: object) -> Deferred:
            def closed(_: object) -> object:
                self.log.info("History store closed")
                return result

            return chat.store.close().addBoth(closed)

        def shut_down(_: object) -> Deferred:
            return chat.shutdown("Server is going away (shutting down)")

        # Let a start that is still reading the window finish first.
        return stopped.addBoth(lambda _: self._loaded).addBoth(shut_down).addBoth(close)


class WindowRetention(RetentionService):
    """
    Retention for a running chat: after each prune, the core reads its
    history window again, so that logins no longer show removed messages.
    """

    def __init__(
        self, chat: ChatService, keep_days: Optional[float], keep_last: Optional[int]
    ) -> None:
        super().__init__(chat.store, keep_days, keep_last, clock=chat.clock)
        self.clock = chat.clock
        self.chat = chat

    def prune(self) -> Deferred:
        def failed(failure: Failure) -> None:
            self.log.error("Could not read the history again: {error}", error=failure.value)

        reloaded = super().prune().addCallback(lambda _: self.chat.reload_window())
        return reloaded.addErrback(failed)


class LoggingServerService(StreamServerEndpointService):
    """
    Listens on an endpoint and logs the address it got (useful with port 0).
    """

    log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: Any, what: str = "Listening on"
    ) -> None:
        super().__init__(endpoint, factory)
        self.what = what

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        if port is not None:
            self.log.info("{what} {address}", what=self.what, address=port.getHost())
        return port


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    path = options["database"]

    def open_store() -> Tuple[IMessageStore, Deferred]:
        if path == ":memory:":
            return MemoryStore(reactor), succeed(None)
        return SQLiteStore.start(path, reactor)

    limits = Limits(
        max_username_length=options["max-username-length"],
        max_message_length=options["max-message-length"],
        flood_rate=options["flood-rate"],
        flood_burst=options["flood-burst"],
        max_waiting=options["max-waiting"],
    )
    connection_limits = ConnectionLimits(
        max_request_size=options["max-request-size"],
        max_connections=options["max-connections"],
        max_connections_per_address=options["max-connections-per-address"],
        login_timeout=options["login-timeout"],
        max_send_queue=options["max-send-queue"],
        keepalive_idle=options["keepalive-idle"],
        keepalive_interval=options["keepalive-interval"],
        keepalive_count=options["keepalive-count"],
    )
    metrics_endpoint = None
    if options["metrics"]:
        metrics_endpoint = endpoints.serverFromString(reactor, options["metrics"])
    top = service.MultiService()
    server = ChatServerService(
        open_store,
        endpoints.serverFromString(reactor, options["port"]),
        reactor,
        options["history-format"],
        limits,
        connection_limits,
        options["history-limit"],
        options["keep-days"],
        options["keep-messages"],
        metrics_endpoint,
    )
    server.setServiceParent(top)
    return top
