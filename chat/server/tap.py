"""
twistd wiring for the chat server: C{twistd -n chat [options]}. The
options are in L{chat.server.options}; this composes the services: the
store, the chat core on it, its TCP listener, metrics and retention, the
log observer and the operator's signals (L{chat.server.signals}).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints, error
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from chat.core.limits import Limits
from chat.core.service import ChatService
from chat.server.logs import log_observer
from chat.server.options import Options, listen_description
from chat.server.signals import OperatorSignals
from chat.server.startup import fail, listen_error, preflight
from chat.storage import IMessageStore, MemoryStore, SQLiteStore, StoreError
from chat.storage.retention import RetentionService
from chat.transports.tcp import ChatServerFactory, ConnectionLimits

__all__ = ["Options", "makeService"]


class ChatServerService(service.MultiService):
    """
    The chat server: when started, opens the store, builds the chat core
    on it and its TCP factory, and listens; the core holds the first
    requests until it has read the history window. When stopped, stops
    listening, tells the clients, stores what is pending and closes the
    store.

    @param open_store: called when the service starts (before the reactor
        runs), returns the open store or raises L{StoreError}.
    @param make_chat: builds the chat core on the store.
    @param endpoint: where to listen (C{description} is what the operator
        gave, for messages).
    @param signals: installed while the service runs.
    @param daemonized: true when start-up runs in a daemon's child (see
        L{fail}).
    """

    log = Logger()

    def __init__(
        self,
        open_store: Callable[[], IMessageStore],
        make_chat: Callable[[IMessageStore], ChatService],
        endpoint: IStreamServerEndpoint,
        reactor: Any,
        connection_limits: ConnectionLimits,
        keep_days: Optional[float] = None,
        keep_messages: Optional[int] = None,
        metrics_endpoint: Optional[IStreamServerEndpoint] = None,
        description: str = "",
        signals: Optional[OperatorSignals] = None,
        daemonized: bool = False,
    ) -> None:
        super().__init__()
        self._description = description
        self._signals = signals
        self._daemonized = daemonized
        self._started_at = 0.0
        self._metrics_endpoint = metrics_endpoint
        self._keep_days = keep_days
        self._keep_messages = keep_messages
        self._open_store = open_store
        self._endpoint = endpoint
        self._make_chat = make_chat
        self._reactor = reactor
        self._connection_limits = connection_limits
        self.chat: Optional[ChatService] = None
        self.factory: Optional[ChatServerFactory] = None
        self._loaded: Deferred = succeed(None)

    def startService(self) -> None:
        try:
            store = self._open_store()
        except (StoreError, OSError) as e:
            self.log.error("Cannot start: {error}", error=str(e))
            fail(f"{e}; check --database", self._daemonized)
        metrics = None
        if self._metrics_endpoint is not None:
            from chat.server.metrics import Metrics

            metrics = Metrics()
            store = metrics.timed(store)
        chat = self.chat = self._make_chat(store)
        if metrics is not None:
            metrics.watch(chat)
            web = LoggingServerService(
                self._metrics_endpoint, metrics.site(), "--metrics", self._daemonized,
                "Metrics served at",
            )  # fmt: skip
            web.setServiceParent(self)
        self._loaded = chat.load()
        self._loaded.addCallback(lambda _: self._start_retention(chat))
        self._loaded.addErrback(self._cannot_start)
        self.factory = ChatServerFactory(chat, self._reactor, self._connection_limits)
        listener = LoggingServerService(
            self._endpoint, self.factory, self._description, self._daemonized
        )
        listener.setServiceParent(self)
        self._started_at = self._reactor.seconds()
        super().startService()
        if self._signals is not None:
            self._signals.install(self)

    def status(self) -> str:
        """
        One line on how the server is doing, for the log.
        """
        chat = self.chat
        users = len(chat.usernames()) if chat is not None else 0
        connections = self.factory.connections if self.factory is not None else 0
        history = len(chat.window) if chat is not None else 0
        uptime = self._reactor.seconds() - self._started_at
        return (
            f"Status: {connections} connections, {users} logged in, "
            f"{history} messages in the history window, up {uptime:.0f} s"
        )

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
            self._restore_signals()
            return stopped

        def close(result: object) -> Deferred:
            def closed(_: object) -> object:
                self.log.info("History store closed")
                # Only now: a signal during the shutdown must not kill the
                # process before the clients are told.
                self._restore_signals()
                return result

            return chat.store.close().addBoth(closed)

        def shut_down(_: object) -> Deferred:
            return chat.shutdown("Server is going away (shutting down)")

        # Let a start that is still reading the window finish first.
        return stopped.addBoth(lambda _: self._loaded).addBoth(shut_down).addBoth(close)

    def _restore_signals(self) -> None:
        if self._signals is not None:
            self._signals.restore()


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
    Listens on an endpoint and logs the address it got (useful with port 0,
    and a Unix socket's full path and mode). A port that cannot be had
    ends start-up with one line (see L{fail}).

    @param description: the --port the operator gave, for messages.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        description: str,
        daemonized: bool = False,
        what: str = "Listening on",
    ) -> None:
        super().__init__(endpoint, factory)
        self._description = description
        self._daemonized = daemonized
        self.what = what
        # As strports.service does: a port that cannot be had fails twistd
        # at start-up instead of being only logged.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except error.CannotListenError as e:
            line = listen_error(self._description, e.socketError)
            self.log.error("Cannot start: {error}", error=line)
            fail(line, self._daemonized)
        self._waitingForPort.addCallback(self._listening)

    def _listening(self, port):
        if port is None:
            return port
        address = port.getHost()
        if isinstance(address, UNIXAddress) and address.name:
            path = os.path.abspath(os.fsdecode(address.name))
            mode = os.stat(path).st_mode & 0o777
            self.log.info(
                "{what} {address} (mode {mode:04o})",
                what=self.what,
                address=UNIXAddress(path),
                mode=mode,
            )
        else:
            self.log.info("{what} {address}", what=self.what, address=address)
        return port


class ChatApplicationService(service.MultiService):
    """
    The chat's services; when twistd adds them to its application, they
    bring the log observer (twistd uses an application's L{ILogObserver}
    component, as for a .tac file).
    """

    def __init__(self, observer: Any = None) -> None:
        super().__init__()
        self._observer = observer

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self._observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)


def makeService(options: Options, reactor: Any = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    twistd = options.parent
    path = options["database"]
    base = "."
    if twistd is not None:
        base = twistd.get("rundir") or "."
    if twistd is None or not twistd.get("chroot"):
        preflight(options, base)
    daemonized = twistd is not None and not twistd.get("nodaemon")

    def open_store() -> IMessageStore:
        if path == ":memory:":
            return MemoryStore(reactor)
        return SQLiteStore.start(path, reactor)

    limits = Limits(
        max_username_length=options["max-username-length"],
        max_message_length=options["max-message-length"],
        flood_rate=options["flood-rate"],
        flood_burst=options["flood-burst"],
        max_waiting=options["max-waiting"],
        max_rooms=options["max-rooms"],
        max_rooms_per_user=options["max-rooms-per-user"],
    )

    def make_chat(store: IMessageStore) -> ChatService:
        return ChatService(
            store, reactor, options["history-format"], limits, options["history-limit"]
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
    observer, log_file = log_observer(options["log-format"], twistd)
    top = ChatApplicationService(observer)
    description = listen_description(options["port"], options["backlog"])
    server = ChatServerService(
        open_store,
        make_chat,
        endpoints.serverFromString(reactor, description),
        reactor,
        connection_limits,
        options["keep-days"],
        options["keep-messages"],
        metrics_endpoint,
        options["port"],
        OperatorSignals(reactor, log_file),
        daemonized,
    )
    server.setServiceParent(top)
    return top
