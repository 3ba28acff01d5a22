"""
twistd wiring for the chat server: C{twistd -n chat [options]}.

Besides the options and the services, this is where the running process
meets its operator: the listen backlog and a Unix socket's mode, the log
format and file, what the signals mean, and the one line printed when the
server cannot start.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints, error
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    ILogObserver,
    Logger,
    formatEvent,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

import chat
from chat.protocol import ChatServerFactory, ConnectionLimits
from chat.service import ChatService, Limits
from chat.store import IMessageStore, MemoryStore, SQLiteStore, StoreError

DEFAULT_PORT = "tcp:9998"
DEFAULT_DATABASE = "chat.sqlite3"

#: The endpoint types that take C{backlog=}; C{unix} also takes C{mode=}.
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")

#: A Unix socket's mode unless the description sets one: the owner and
#: its group may connect, nobody else (Twisted's default is 0666).
UNIX_MODE = "660"

TLS_HINT = "pip install 'chat[tls]'"


def default_backlog(path: str = "/proc/sys/net/core/somaxconn") -> int:
    """
    The largest listen backlog the kernel grants (Linux's
    C{net.core.somaxconn}); elsewhere the C library's C{SOMAXCONN}.
    """
    try:
        with open(path) as f:
            return max(1, int(f.read()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def parse_description(description: str) -> Tuple[str, List[str], Dict[str, str]]:
    """
    Split an endpoint description as Twisted does: the type, the
    positional arguments and the C{key=value} ones, with C{\\} escaping a
    colon or an equals sign.
    """
    segments: List[Tuple[Optional[str], str]] = []
    current: List[str] = []
    key: Optional[str] = None
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            segments.append((key, "".join(current)))
            current, key = [], None
        elif char == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(char)
    segments.append((key, "".join(current)))
    kind = segments[0][1] if segments[0][0] is None else ""
    args = [value for name, value in segments[1:] if name is None]
    kwargs = {name: value for name, value in segments[1:] if name is not None}
    return kind, args, kwargs


def listen_description(description: str, backlog: int) -> str:
    """
    C{description} with C{backlog} for the types that take one, and a Unix
    socket's mode L{UNIX_MODE}, unless it already sets them.
    """
    kind, _, kwargs = parse_description(description)
    if kind not in _BACKLOG_TYPES:
        return description
    if "backlog" not in kwargs:
        description += f":backlog={backlog}"
    if kind == "unix" and "mode" not in kwargs:
        description += f":mode={UNIX_MODE}"
    return description


class StartupError(Exception):
    """
    The server cannot start; the message is the one line for the operator.
    """


def fail(message: str, daemonized: bool = False) -> NoReturn:
    """
    Stop start-up with one line on standard error and exit status 1.

    @param daemonized: true in a daemon's child after the fork, which has
        no terminal: the error then goes to twistd, which reports it.
    """
    line = f"chat: {message}"
    if daemonized:
        raise StartupError(line)
    # twistd sends sys.stderr to the log once logging has begun; the line
    # is for whoever started the server.
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()
    raise SystemExit(1)


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


_CONNECTION = ConnectionLimits()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a chat server for the TTM4100 KTN JSON protocol. History is kept "
        f"in an SQLite file ({DEFAULT_DATABASE} in the working directory unless "
        "--database says otherwise) and survives restarts. "
        "Examples of --port: tcp:9998:interface=127.0.0.1 (loopback only); "
        "ssl:9999:privateKey=key.pem:certKey=cert.pem (TLS, which needs "
        "pyOpenSSL); unix:/run/chat/chat.sock:mode=660 (a Unix socket; mode "
        f"{UNIX_MODE} unless given). "
        "Signals: SIGTERM, SIGINT and SIGQUIT shut down gracefully; SIGHUP "
        "reopens the log file; SIGUSR1 rotates the log file and logs a status "
        "line; SIGUSR2 logs a status line."
    )
    optParameters = [
        [
            "port",
            "p",
            DEFAULT_PORT,
            "Where to listen: a Twisted endpoint description (examples below); "
            "a bare number means tcp:NUMBER.",
        ],
        [
            "backlog",
            None,
            None,
            "Connections the kernel may queue before the server accepts them "
            "(default: the kernel's limit, net.core.somaxconn); a backlog= in "
            "--port wins.",
            _positive,
        ],
        [
            "database",
            "d",
            DEFAULT_DATABASE,
            "SQLite file that keeps the history; ':memory:' keeps nothing.",
        ],
        [
            "log-format",
            None,
            "text",
            "'text' (lines for people) or 'json' (one JSON object per line, for log collectors).",
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

    def opt_version(self) -> None:
        """
        Display chat's version and exit.
        """
        import twisted

        print(f"chat {chat.__version__} (Twisted {twisted.__version__})")
        sys.exit(0)

    def postOptions(self) -> None:
        if self["port"].isdigit():
            self["port"] = f"tcp:{self['port']}"
        if self["backlog"] is None:
            self["backlog"] = default_backlog()
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be 'text' or 'json'")
        twistd = self.parent
        if self["log-format"] == "json" and twistd is not None:
            if twistd.get("syslog") or twistd.get("logger"):
                raise usage.UsageError("--log-format json cannot go to --syslog or --logger")
        port = self["port"]
        if parse_description(port)[0] == "ssl":
            # Before the endpoint reads its key file: a missing pyOpenSSL
            # is the first thing to fix.
            try:
                from twisted.internet import ssl  # noqa: F401
            except ImportError:
                fail(f"--port {port}: TLS needs pyOpenSSL, which is missing: {TLS_HINT}")
        from twisted.internet import reactor

        try:
            endpoints.serverFromString(reactor, port)
        except (ValueError, KeyError, TypeError) as e:
            raise usage.UsageError(f"--port: not an endpoint description ({e})") from e
        except ImportError as e:
            fail(f"--port {port}: a module it needs is missing ({e})")
        except OSError as e:
            fail(f"--port {port}: cannot read {e.filename or 'a file'}: {e.strerror or e}")
        if self["history-format"] not in ("string", "object"):
            raise usage.UsageError("--history-format must be 'string' or 'object'")


class ChatServerService(service.Service):
    """
    Opens the store and loads the history when started; tells the clients
    and closes the store when stopped. While it runs, L{OperatorSignals}
    (if given) are installed.

    @param daemonized: true when start-up runs in a daemon's child (see
        L{fail}).
    """

    log = Logger()

    def __init__(
        self,
        open_store,
        factory: ChatServerFactory,
        clock: IReactorTime,
        history_format: str,
        limits: Limits,
        signals: Optional["OperatorSignals"] = None,
        daemonized: bool = False,
    ):
        self._open_store = open_store
        self._factory = factory
        self._clock = clock
        self._history_format = history_format
        self._limits = limits
        self._signals = signals
        self._daemonized = daemonized
        self._started_at = 0.0
        self.chat: Optional[ChatService] = None

    def startService(self) -> None:
        try:
            store: IMessageStore = self._open_store()
        except (StoreError, OSError) as e:
            self.log.error("Cannot start: {error}", error=str(e))
            fail(f"{e}; check --database", self._daemonized)
        self.chat = ChatService(store, self._clock, self._history_format, self._limits)
        self.chat.load()
        self._factory.service = self.chat
        self._started_at = self._clock.seconds()
        service.Service.startService(self)
        if self._signals is not None:
            self._signals.install(self)

    def status(self) -> str:
        """
        One line on how the server is doing, for the log.
        """
        chat = self.chat
        users = len(chat.usernames()) if chat is not None else 0
        history = len(chat.history) if chat is not None else 0
        uptime = self._clock.seconds() - self._started_at
        return (
            f"Status: {self._factory.connections} connections, {users} logged in, "
            f"{history} messages in history, up {uptime:.0f} s"
        )

    def stopService(self):
        """
        Tell the clients, flush, wait (a bounded time) for the connections to
        close, then close the store and put the signals back as they were.

        @return: a Deferred that fires when all that is done.
        """
        service.Service.stopService(self)
        chat = self.chat
        if chat is None:
            self._restore_signals()
            return None

        def close(result):
            chat.store.close()
            self.log.info("History store closed")
            # Only now: a signal during the shutdown must not kill the
            # process before the clients are told.
            self._restore_signals()
            return result

        return chat.shutdown("Server is going away (shutting down)").addBoth(close)

    def _restore_signals(self) -> None:
        if self._signals is not None:
            self._signals.restore()


class OperatorSignals:
    """
    What the operator's signals mean while the server runs:

      - SIGHUP reopens the log file (after logrotate moved it), and is
        otherwise harmless (a closing terminal sends it);
      - SIGUSR1 rotates the log file as twistd does (C{twistd.log} becomes
        C{twistd.log.1}) and logs a status line;
      - SIGUSR2 logs a status line;
      - SIGQUIT shuts down as gracefully as SIGTERM (clients told, history
        stored), with exit status 0.

    The handlers only schedule the work on the reactor (as Twisted's own
    SIGTERM handler does), so nothing runs in the middle of a write.

    @param reactor: the reactor to schedule on and to stop.
    @param log_file: what twistd logs to, if chat made the observer (see
        L{log_observer}): a L{LogFile}, or standard output; L{None} for
        syslog or twistd's --logger.
    """

    log = Logger()
    names = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT")

    def __init__(self, reactor: Any, log_file: Any = None) -> None:
        self._reactor = reactor
        self._log_file = log_file
        self._server: Optional[ChatServerService] = None
        self._previous: Dict[int, Any] = {}

    def install(self, server: ChatServerService) -> None:
        self._server = server
        for name in self.names:
            number = getattr(signal, name, None)
            if number is not None and number not in self._previous:
                self._previous[number] = signal.signal(number, self._received)

    def restore(self) -> None:
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            signal.signal(number, handler)

    def _received(self, number: int, frame: Any) -> None:
        self._reactor.callFromThread(self.handle, number)

    def handle(self, number: int) -> None:
        """
        Do what signal C{number} means (on the reactor, not in the handler).
        """
        name = signal.Signals(number).name
        log_file = self._log_file
        if name == "SIGQUIT":
            self.log.info("Received SIGQUIT, shutting down.")
            try:
                self._reactor.stop()
            except error.ReactorNotRunning:
                self.log.info("Already shutting down")
            return
        if name == "SIGHUP":
            if isinstance(log_file, LogFile):
                try:
                    log_file.reopen()
                except OSError as e:
                    self.log.error("SIGHUP: cannot reopen the log file: {error}", error=str(e))
                else:
                    self.log.info("SIGHUP: reopened the log file {path}", path=log_file.path)
            elif log_file is not None:
                self.log.info("SIGHUP: logging to standard output, nothing to reopen")
            else:
                self.log.info("SIGHUP: twistd's --syslog or --logger log, nothing to reopen")
            return
        if name == "SIGUSR1" and isinstance(log_file, LogFile):
            log_file.rotate()
        if self._server is not None:
            self.log.info("{status} ({signal})", status=self._server.status(), signal=name)


class LoggingServerService(StreamServerEndpointService):
    """
    Listens on an endpoint and logs the address it got (useful with port 0,
    and a Unix socket's full path and mode). A port that cannot be had
    ends start-up with one line (see L{fail}).

    @param description: the --port the operator gave, for messages.
    """

    log = Logger()

    def __init__(self, endpoint, factory, description: str, daemonized: bool = False) -> None:
        super().__init__(endpoint, factory)
        self._description = description
        self._daemonized = daemonized
        # As strports.service does: a port that cannot be had fails twistd
        # at start-up instead of being only logged.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except error.CannotListenError as e:
            line = _listen_error(self._description, e.socketError)
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
                "Listening on {address} (mode {mode:04o})", address=UNIXAddress(path), mode=mode
            )
        else:
            self.log.info("Listening on {address}", address=address)
        return port


def _listen_error(description: str, reason: Any) -> str:
    """
    The line for a port that cannot be listened on.

    @param reason: an L{OSError}, or a text.
    """
    code = getattr(reason, "errno", None)
    if code == errno.EADDRINUSE:
        advice = "is another server running? Stop it or choose another --port"
    elif code in (errno.EACCES, errno.EPERM):
        advice = "ports below 1024 need privileges; choose another --port"
    else:
        advice = "choose another --port"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"cannot listen on {description}: {text} ({advice})"


def preflight(options: Options, base: str = ".") -> None:
    """
    Check before twistd daemonizes (so that the error reaches the terminal
    as one line) what most often stops the server from starting: a port in
    use and a database in a missing or unwritable directory. Nothing is
    created; the real start-up still reports anything else.

    @param base: the directory relative paths are in once twistd runs
        (its --rundir).
    """
    _preflight_database(options["database"], base)
    _preflight_port(options["port"], base)


def _preflight_database(path: str, base: str) -> None:
    if path != ":memory:":
        path = os.path.join(base, path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            fail(
                f"cannot open database {path}: the directory {directory} does not exist "
                "(create it or choose another --database)"
            )
        if not os.access(path if os.path.exists(path) else directory, os.R_OK | os.W_OK):
            fail(f"cannot open database {path}: permission denied (choose another --database)")


def _preflight_port(description: str, base: str) -> None:
    kind, args, kwargs = parse_description(description)
    if kind in ("tcp", "tcp6", "ssl"):
        try:
            port = int(kwargs.get("port") or args[0])
        except (IndexError, ValueError):
            return
        interface = kwargs.get("interface", "::" if kind == "tcp6" else "")
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As Twisted binds (SO_REUSEADDR), so that only a listener in
            # the way makes it fail.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                if family == socket.AF_INET6:
                    info = socket.getaddrinfo(
                        interface, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
                    )
                    probe.bind(info[0][4])
                else:
                    probe.bind((interface, port))
            except OSError as e:
                fail(_listen_error(description, e))
    elif kind == "unix" and (args or kwargs.get("address")):
        where = os.path.join(base, kwargs.get("address") or args[0])
        if not os.path.isdir(os.path.dirname(os.path.abspath(where))):
            fail(_listen_error(description, "its directory does not exist"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(where)
            except OSError:
                return  # nobody listens there: a stale socket is replaced
        fail(_listen_error(description, OSError(errno.EADDRINUSE, "Address already in use")))


def log_observer(log_format: str, twistd: Optional[usage.Options]) -> Tuple[Any, Any]:
    """
    The observer for twistd's log, and the file it writes to, made the
    way twistd makes its own (standard output in the foreground, else
    C{--logfile} or C{twistd.log}, rotated at 1 MB), so that SIGHUP can
    reopen the file and C{--log-format json} can change the format.

    @param twistd: twistd's own options, or L{None} outside twistd.
    @return: C{(observer, file)}, or C{(None, None)} where twistd keeps
        its own (syslog, --logger, or outside twistd).
    """
    if twistd is None or twistd.get("syslog") or twistd.get("logger"):
        return None, None
    name = twistd.get("logfile") or ""
    foreground = twistd.get("nodaemon")
    if name == "-" and not foreground:
        return None, None  # twistd refuses: a daemon cannot log to stdout
    out: Any
    if name == "-" or (foreground and not name):
        out = sys.stdout
    else:
        name = name or "twistd.log"
        try:
            out = LogFile.fromFullPath(name)
        except OSError as e:
            fail(f"cannot open the log file {name}: {e.strerror or e} (check --logfile)")
    if log_format == "json":
        json_observer = jsonFileLogObserver(out, recordSeparator="")

        def observer(event: Dict[str, Any]) -> None:
            # The text too, so that a collector can show it as it is.
            json_observer({**event, "log_text": formatEvent(event)})

        return observer, out
    return textFileLogObserver(out), out


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


def makeService(options: Options, reactor=None) -> service.MultiService:
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
        return MemoryStore() if path == ":memory:" else SQLiteStore(path)

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
    observer, log_file = log_observer(options["log-format"], twistd)
    top = ChatApplicationService(observer)
    # The factory gets its chat core when the server service starts, which
    # happens before the reactor accepts the first connection.
    factory = ChatServerFactory(None, reactor, connection_limits)
    server = ChatServerService(
        open_store,
        factory,
        reactor,
        options["history-format"],
        limits,
        OperatorSignals(reactor, log_file),
        daemonized,
    )
    server.setServiceParent(top)
    description = listen_description(options["port"], options["backlog"])
    listener = LoggingServerService(
        endpoints.serverFromString(reactor, description), factory, options["port"], daemonized
    )
    listener.setServiceParent(top)
    return top
