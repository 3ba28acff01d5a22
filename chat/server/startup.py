"""
Start-up errors as one line: what stops the server from starting is said
on standard error, with what to do, and the exit status is 1; before
twistd daemonizes, L{preflight} checks what most often goes wrong, so that
the line reaches the terminal.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.internet.abstract import isIPv6Address

if TYPE_CHECKING:
    from chat.server.options import Options

TLS_HINT = "pip install 'twisted[tls]'"


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


def listen_error(description: str, reason: Any) -> str:
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


def preflight(options: "Options", base: str = ".") -> None:
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
        if base != os.curdir:
            # Named as given ("data/chat.sqlite3", not "./data/...") when
            # twistd runs in the current directory.
            path = os.path.join(base, path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            fail(
                f"cannot open database {path}: the directory {directory} does not exist "
                "(create it or choose another --database)"
            )
        if not os.access(path if os.path.exists(path) else directory, os.R_OK | os.W_OK):
            fail(f"cannot open database {path}: permission denied (choose another --database)")
        if os.path.isfile(path):
            # Another server's lock (see chat.storage.sqlite.lock_file), tried
            # and let go at once: the real start takes it for good.
            from chat.storage import StoreError
            from chat.storage.sqlite import lock_file

            try:
                fd = lock_file(path)
            except StoreError as e:
                fail(f"{e}; check --database")
            if fd is not None:
                os.close(fd)


def _preflight_port(description: str, base: str) -> None:
    from chat.server.options import parse_description, tcp_port

    kind, args, kwargs = parse_description(description)
    if kind in ("tcp", "tcp6", "ssl"):
        port = tcp_port(description)
        if port is None:
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
                fail(listen_error(description, e))
    elif kind == "unix" and (args or kwargs.get("address")):
        where = os.path.join(base, kwargs.get("address") or args[0])
        if not os.path.isdir(os.path.dirname(os.path.abspath(where))):
            fail(listen_error(description, "its directory does not exist"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(where)
            except OSError:
                return  # nobody listens there: a stale socket is replaced
        fail(listen_error(description, OSError(errno.EADDRINUSE, "Address already in use")))
