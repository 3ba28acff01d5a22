"""
The options of C{twistd chat}, and the endpoint descriptions they give:
the listen backlog and a Unix socket's mode added where the operator did
not set them.
"""

from __future__ import annotations

import socket
import sys
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import endpoints
from twisted.python import usage

import chat
from chat.core.history import DEFAULT_HISTORY_LIMIT
from chat.core.limits import Limits
from chat.server.startup import TLS_HINT, fail
from chat.transports.connection import ConnectionLimits

DEFAULT_PORT = "tcp:9998"
DEFAULT_DATABASE = "chat.sqlite3"

#: The endpoint types that take C{backlog=}; C{unix} also takes C{mode=}.
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")

#: The largest backlog listen() takes (a C int); past it, an
#: OverflowError at start-up. The kernel caps any backlog at somaxconn.
MAX_BACKLOG = 2**31 - 1

#: The largest --history-limit: what the history window (a deque) and
#: SQLite's LIMIT take (a 64-bit signed integer).
MAX_HISTORY_LIMIT = 2**63 - 1

#: A Unix socket's mode unless the description sets one: the owner and
#: its group may connect, nobody else (Twisted's default is 0666).
UNIX_MODE = "660"


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


def tcp_port(description: str) -> Optional[int]:
    """
    The port number of a C{tcp:}, C{tcp6:} or C{ssl:} endpoint description,
    or None for another kind or a port that is not a number (Twisted's own
    parsing says what is wrong with that).
    """
    return _port(*parse_description(description))


def _port(kind: str, args: List[str], kwargs: Dict[str, str]) -> Optional[int]:
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    try:
        return int(kwargs.get("port") or args[0])
    except (IndexError, ValueError):
        return None


def _check_numbers(option: str, description: str) -> None:
    """
    A usage error for a number in C{description} that Twisted takes but
    the socket refuses, with an C{OverflowError} traceback at start-up: a
    TCP port number outside 0 to 65535 (refused by C{bind()}), a backlog
    outside 0 to L{MAX_BACKLOG} (by C{listen()}).
    """
    kind, args, kwargs = parse_description(description)
    port = _port(kind, args, kwargs)
    if port is not None and not 0 <= port <= 65535:
        raise usage.UsageError(f"{option}: port {port} is not between 0 and 65535")
    if kind in _BACKLOG_TYPES and "backlog" in kwargs:
        try:
            backlog = int(kwargs["backlog"])
        except ValueError:
            return  # (Twisted's own parsing has said what is wrong)
        if not 0 <= backlog <= MAX_BACKLOG:
            raise usage.UsageError(
                f"{option}: backlog {backlog} is not between 0 and {MAX_BACKLOG}"
            )


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


def _between(low: int, high: int) -> Callable[[str], int]:
    """
    A whole number from C{low} to C{high}: for the TCP keepalive options,
    whose values past Linux's limits (32,767 seconds, 127 probes) the
    kernel would refuse, leaving its own defaults in place; for a number
    that must fit where it goes (L{MAX_HISTORY_LIMIT}).
    """

    def check(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"{value} is not between {low} and {high}")
        return number

    return check


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
            "history-limit",
            None,
            DEFAULT_HISTORY_LIMIT,
            "How many of the latest messages a login gets (older ones are paged "
            "with the history request; a bare-JSON client gets the newest part "
            "it can read in about 0.4 s, 32 KiB).",
            _between(0, MAX_HISTORY_LIMIT),
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
            "Keep only the latest this many messages (of each room and each "
            "private conversation), removing older ones at start-up and hourly; "
            "at least 1. Default: keep them all.",
            _positive,
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
            "max-rooms",
            None,
            Limits.max_rooms,
            "Most rooms at once, the lobby included (a room exists while someone "
            "is in it; its history stays stored).",
            _positive,
        ],
        [
            "max-rooms-per-user",
            None,
            Limits.max_rooms_per_user,
            "Most rooms one user may be in at once.",
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
            "Most connections open at once (0: no limit). Past it the oldest "
            "connection that has not logged in makes room; if all are logged in, "
            "the newcomer is refused with an error.",
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
            "Seconds of silence before TCP keepalive probes a client (0: no keepalive; "
            "at most 32767).",
            _between(0, 32767),
        ],
        [
            "keepalive-interval",
            None,
            _CONNECTION.keepalive_interval,
            "Seconds between TCP keepalive probes (1 to 32767).",
            _between(1, 32767),
        ],
        [
            "keepalive-count",
            None,
            _CONNECTION.keepalive_count,
            "Unanswered keepalive probes after which a client is dropped (1 to 127).",
            _between(1, 127),
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
        # listen() takes a C int (past it, an OverflowError at start-up);
        # the kernel caps any backlog at somaxconn anyway.
        self["backlog"] = min(self["backlog"], MAX_BACKLOG)
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
        _check_numbers("--port", port)
        if self["metrics"]:
            try:
                endpoints.serverFromString(reactor, self["metrics"])
            except (ValueError, KeyError, TypeError) as e:
                raise usage.UsageError(f"--metrics: not an endpoint description ({e})") from e
            _check_numbers("--metrics", self["metrics"])
        if self["history-format"] not in ("string", "object"):
            raise usage.UsageError("--history-format must be 'string' or 'object'")
