"""
The command line: C{chat} (or C{python -m chat.client}).

L{Options} reads the command line over the defaults of the config file
(L{chat.client.config}); L{make_endpoint} turns them into a client endpoint
(a C{tls:} description may name a PEM bundle or a directory in
C{trustRoots=}); L{main} runs a session with the front end the standard
streams call for, started with C{task.react}. Every error is one line on
standard error; the exit status is 0 for a session that ended as asked, 1
when it could not connect or ended otherwise, 2 for a usage error.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.python import usage

from chat.client.config import ConfigError, InputHistory, config_path, history_path, load_config
from chat.client.connection import ChatSession, describe_error
from chat.client.display import Renderer
from chat.client.rooms import EXTENSIONS, RoomState
from chat.usage import ParagraphOptions

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9998

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def port_number(value: Any, what: str = "--port") -> int:
    """
    A TCP port number from text.

    @raise usage.UsageError: saying what is wrong with C{value}.
    """
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise usage.UsageError(f"{what}: {value!r} is not a port number (1-65535)")
    return number


def _yes(value: str, what: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off", ""):
        return False
    raise usage.UsageError(f"{what}: {value!r} is not yes or no")


class Options(ParagraphOptions):
    synopsis = "Usage: chat [options]   (or: python -m chat.client [options])"
    longdesc = """\
A terminal client for the TTM4100 KTN JSON chat protocol.

Type the requests of the standard: 'login NAME', 'msg TEXT', 'names', 'help',
'logout'. Any other line 'WORD REST' is sent as {"request": WORD, "content":
REST} (content null when there is no REST), so server extensions work too.
Conveniences: a leading '/' is dropped ('/names' sends names); the request
word is lower-cased; blank lines send nothing. The client's own commands:
'/me TEXT' sends the message '/me TEXT', shown as an action ('* alice
waves'); '/quit' logs out and quits; '/clear' clears the screen;
'/presence on|off' shows or hides who joins and leaves.

Rooms, private messages and presence: on connecting the client asks the
server for these extensions (a 'cap' request; its answer is not shown). A
server that grants them sends the room of each line, which is shown ('#dev')
while you are in more than one room; '/join ROOM' joins a room (or makes one
you are in the current one), '/leave [ROOM]' leaves one, '/rooms' lists them,
'/pm USER TEXT' sends a private message (shown '[private]' and highlighted)
and '/pm USER' shows your private history with USER; who joins and leaves
your rooms is one dim line each ('--> alice joined dev'). With a server that
does not grant them (our older server, the servers in the field) the client
works and shows everything as it always did.

When standard input is a terminal the client is interactive: messages appear
above the line you are typing; Left/Right/Home/End, Ctrl-A/E/U/K/W edit the
line; Up/Down recall earlier lines (kept between sessions in
$XDG_DATA_HOME/chat/history); Tab completes request words and the usernames
seen; a paste goes into the line whole, line breaks included, and Enter sends
it as one request; Page Up/Page Down show earlier lines; Ctrl-L repaints the
screen; Ctrl-D (on an empty line) or Ctrl-C quits, sending 'logout' first if
you logged in. A line that mentions your name stands out (--bell rings the
bell for it). With rooms, the prompt names the current room (once you are in a room other
than the lobby), Tab completes
room names after 'join' and 'leave', and Ctrl-X switches to the next room you
are in. When the connection drops, the client reconnects with backoff, logs
in again under the same name and joins your rooms again; the line you are
typing is kept.
Colours are off when NO_COLOR is set, with --no-color, or when output is not
a terminal.

Otherwise the client is plain and scriptable: one request per input line, one
output line per response. When the input ends it waits until the server has
answered every request and then been quiet for --wait seconds, and exits
when the server closes the connection. With --json each response is printed
as received, one JSON object per line. Plain mode never reconnects, and logs
in only when told (--name or a login line).

Defaults for --host, --port, --connect, --name, --bell, --no-presence
('presence = no') and --no-extensions ('extensions = no') can be set in
$XDG_CONFIG_HOME/chat/config.ini (~/.config/chat/config.ini), section
[client], e.g. 'host = chat.example.org', 'name = alice'; with a name there,
'chat' alone connects and logs in.

The exit status is 0 when the session ended as asked (a logout the server
answered, quit, end of input with every request answered), 1 when the client
could not connect, the connection was lost or closed by the server
unexpectedly, or answers were missing, 2 for a usage error."""

    optFlags = [
        ["json", "j", "Print each response as one line of JSON (plain mode)."],
        ["plain", None, "Plain line-in, line-out mode even on a terminal."],
        ["no-color", None, "No colours (also when NO_COLOR is set)."],
        ["bell", None, "Ring the terminal bell for a line that mentions you."],
        ["no-reconnect", None, "Interactive mode: end when the connection drops."],
        ["no-config", None, "Ignore the config file."],
        ["no-presence", None, "Do not show (or ask for) who joins and leaves your rooms."],
        [
            "no-extensions",
            None,
            "Ask the server for no extensions (no 'cap' request): a standard client.",
        ],
    ]
    optParameters = [
        ["host", "H", None, f"Server host name or address [default: {DEFAULT_HOST}]"],
        ["port", "p", None, f"Server TCP port [default: {DEFAULT_PORT}]"],
        [
            "connect",
            "c",
            None,
            "A Twisted client endpoint description instead of --host/--port, "
            "e.g. tcp:host=localhost:port=9998, unix:path=/tmp/chat.sock or "
            "tls:example.org:9999 (add :trustRoots=PATH, a PEM file or a directory "
            "of them, to trust a certificate the system does not)",
        ],
        ["name", "n", None, "Log in under this name on connecting."],
        [
            "wait",
            "w",
            "1",
            "Plain mode: seconds of quiet from the server to wait for once the "
            "input has ended and every request is answered.",
        ],
        [
            "timeout",
            "t",
            "10",
            "Plain mode: seconds of quiet to wait for answers still missing, then "
            "give up (exit status 1).",
        ],
    ]

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        super().__init__()
        self.env = env
        #: The name to log in under, and whether it came from the config
        #: file (used in interactive mode only).
        self.login_name: Optional[str] = None
        self.name_from_config = False
        self.config_file: Optional[str] = None

    def _seconds(self, key: str) -> float:
        try:
            value = float(self[key])
        except (TypeError, ValueError):
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise usage.UsageError(f"--{key}: {self[key]!r} is not a number of seconds")
        return value

    def postOptions(self) -> None:
        config: Dict[str, str] = {}
        if not self["no-config"]:
            self.config_file = config_path(self.env)
            try:
                config = load_config(self.config_file)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        where = f"{self.config_file}: "
        given_host = self["host"] is not None or self["port"] is not None
        if self["connect"] and given_host:
            raise usage.UsageError("give either --connect or --host/--port, not both")
        if self["port"] is not None:
            self["port"] = port_number(self["port"])
        if not self["connect"] and not given_host:
            if config.get("connect", "").strip() and (config.get("host") or config.get("port")):
                raise usage.UsageError(f"{where}give either connect or host/port, not both")
            self["connect"] = config.get("connect", "").strip() or None
        if not self["connect"]:
            if self["host"] is None:
                self["host"] = config.get("host", "").strip() or DEFAULT_HOST
            if self["port"] is None:
                port = config.get("port", "").strip()
                self["port"] = port_number(port, where + "port") if port else DEFAULT_PORT
        if not self["bell"] and "bell" in config:
            self["bell"] = _yes(config["bell"], where + "bell")
        for flag, key in (("no-presence", "presence"), ("no-extensions", "extensions")):
            if not self[flag] and key in config:
                self[flag] = not _yes(config[key], where + key)
        name = self["name"]
        if name is None and config.get("name", "").strip():
            name = config["name"].strip()
            self.name_from_config = True
        if name is not None and not re.fullmatch(r"[A-Za-z0-9]+", name):
            source = where + "name" if self.name_from_config else "--name"
            raise usage.UsageError(f"{source}: {name!r} is not a username (letters A-Z, a-z, 0-9)")
        self.login_name = name
        self["wait"] = self._seconds("wait")
        self["timeout"] = self._seconds("timeout")

    def extensions(self) -> List[str]:
        """
        The extensions to ask the server for.
        """
        if self["no-extensions"]:
            return []
        return [e for e in EXTENSIONS if not (e == "presence" and self["no-presence"])]

    def target(self) -> str:
        """
        Where the client connects, for messages.
        """
        if self["connect"]:
            return self["connect"]
        return f"{self['host']} port {self['port']}"


def split_description(text: str) -> Tuple[List[str], Dict[str, str]]:
    """
    The arguments of a Twisted endpoint description, as Twisted reads them:
    fields separated by C{:}, C{key=value} fields as keywords, a backslash
    escaping the next character.
    """
    fields: List[Tuple[str, Optional[str]]] = []
    key: Optional[str] = None
    current = ""
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == ":":
            fields.append((current, key) if key is not None else (current, None))
            current, key = "", None
        elif char == "=" and key is None:
            key, current = current, ""
        else:
            current += char
    fields.append((current, key))
    args = [value for value, name in fields if name is None]
    kwargs = {name: value for value, name in fields if name is not None}
    return args, kwargs


def load_trust_root(path: str) -> Any:
    """
    A trust root from a PEM file (one certificate or a bundle) or from a
    directory of C{.pem} files.

    @raise usage.UsageError: saying what is wrong with C{path}.
    """
    from twisted.internet import ssl

    what = f"--connect: trustRoots={path}"
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(".pem")
        )
    elif os.path.exists(path):
        files = [path]
    else:
        raise usage.UsageError(f"{what}: no such file or directory")
    certificates = []
    for name in files:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise usage.UsageError(f"{what}: cannot read {name}: {e.strerror}") from None
        for block in _PEM_CERTIFICATE.findall(data):
            try:
                certificates.append(ssl.Certificate.loadPEM(block))
            except Exception:
                raise usage.UsageError(
                    f"{what}: {name} holds a certificate that is not valid"
                ) from None
    if not certificates:
        raise usage.UsageError(f"{what}: no PEM certificate in it")
    return ssl.trustRootFromCertificates(certificates)


def _tls_endpoint(reactor: Any, description: str) -> Any:
    # A tls: description with trustRoots=, built from Twisted's public parts
    # (Twisted's own parser takes only a directory, and fails with a
    # traceback on a file).
    from twisted.internet import endpoints, ssl

    args, kwargs = split_description(description)
    args = args[1:]
    host = kwargs.pop("host", None) or (args.pop(0) if args else None)
    port = kwargs.pop("port", None) or (args.pop(0) if args else "443")
    if not host:
        raise usage.UsageError("--connect: a tls: description needs a host")
    trust = load_trust_root(kwargs.pop("trustRoots"))
    certificate, key = kwargs.pop("certificate", None), kwargs.pop("privateKey", None)
    client_certificate = None
    if certificate:
        try:
            with open(certificate, "rb") as f:
                pem = f.read()
            if key:
                with open(key, "rb") as f:
                    pem += b"\n" + f.read()
            client_certificate = ssl.PrivateCertificate.loadPEM(pem)
        except Exception as e:
            raise usage.UsageError(f"--connect: certificate={certificate}: {e}") from None
    timeout = kwargs.pop("timeout", "30")
    bind = kwargs.pop("bindAddress", None)
    inner_description = kwargs.pop("endpoint", None)
    if kwargs or args:
        extra = sorted(kwargs) or args
        raise usage.UsageError(f"--connect: tls: does not take {extra[0]!r}")
    try:
        seconds = float(timeout)
    except ValueError:
        raise usage.UsageError(f"--connect: timeout={timeout} is not a number") from None
    if inner_description is not None:
        inner = endpoints.clientFromString(reactor, inner_description)
    else:
        inner = endpoints.HostnameEndpoint(
            reactor,
            host.encode("idna"),
            port_number(port, "--connect: port"),
            seconds,
            None if bind is None else (bind, 0),
        )
    options = ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client_certificate)
    return endpoints.wrapClientTLS(options, inner)


def make_endpoint(reactor: Any, options: Options) -> Any:
    """
    The client endpoint the options describe.

    @raise usage.UsageError: for an endpoint description that cannot be used.
    """
    from twisted.internet import endpoints

    if not options["connect"]:
        return endpoints.HostnameEndpoint(reactor, options["host"], options["port"])
    description = options["connect"]
    kind = description.split(":", 1)[0].strip().lower()
    if kind in ("tls", "ssl"):
        try:
            import OpenSSL  # noqa: F401
            import service_identity  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--connect: TLS needs pyOpenSSL and service_identity: "
                "pip install 'twisted[tls]' (or this project's [tls] extra)"
            ) from None
        if kind == "tls" and "trustRoots" in split_description(description)[1]:
            return _tls_endpoint(reactor, description)
    try:
        return endpoints.clientFromString(reactor, description)
    except usage.UsageError:
        raise
    except Exception as e:
        detail = describe_error(e)
        raise usage.UsageError(f"--connect: not a client endpoint description ({detail})") from e


def error_line(text: str) -> None:
    """
    Write one error line on standard error.
    """
    sys.stderr.write(f"chat: {text}\n")
    sys.stderr.flush()


def make_front_end(
    reactor: Any,
    options: Options,
    me: Callable[[], Optional[str]] = lambda: None,
    rooms: Optional[RoomState] = None,
) -> Any:
    """
    The front end the options and the standard streams call for.

    @param me: returns the user's name once logged in, for highlighting.
    @param rooms: the session's extensions and rooms, for what is shown.
    """
    from chat.client.console import InteractiveFrontEnd
    from chat.client.plain import PlainFrontEnd, json_formatter, plain_formatter

    env = os.environ
    on_terminal = os.isatty(0) and os.isatty(1) and env.get("TERM") != "dumb"
    colour = (
        not options["no-color"]
        and not env.get("NO_COLOR")
        and os.isatty(1)
        and env.get("TERM") != "dumb"
    )
    quiet, patience = options["wait"], options["timeout"]
    if options["json"]:
        return PlainFrontEnd(reactor, json_formatter(error_line), quiet, patience, error=error_line)
    if on_terminal and not options["plain"]:
        front = InteractiveFrontEnd(
            reactor,
            Renderer(colour=colour, multiline=True, me=me, rooms=rooms),
            options.target(),
            history=InputHistory(history_path(env)),
            bell=options["bell"],
        )
    else:
        front = PlainFrontEnd(
            reactor,
            plain_formatter(Renderer(colour=colour, me=me, rooms=rooms)),
            quiet,
            patience,
            bell=options["bell"] and os.isatty(1),
            error=error_line,
        )
    return front


async def main(reactor: Any, *argv: str) -> None:
    """
    Run the client; C{task.react} entry point.
    """
    from chat.client.console import InteractiveFrontEnd

    options = Options()
    try:
        options.parseOptions(list(argv))
        endpoint = make_endpoint(reactor, options)
    except usage.UsageError as e:
        error_line(f"{e}\n{options.getSynopsis()}\n(--help for the options)".rstrip())
        raise SystemExit(2) from None
    except BrokenPipeError:
        # --help into a pager or head that stopped reading.
        raise SystemExit(0) from None
    session: Optional[ChatSession] = None
    rooms = RoomState(options.extensions())
    front = make_front_end(
        reactor, options, lambda: session.username if session else None, rooms=rooms
    )
    interactive = isinstance(front, InteractiveFrontEnd)
    session = ChatSession(
        endpoint,
        front,
        reactor,
        reconnect=interactive and not options["no-reconnect"],
        rooms=rooms,
    )
    try:
        await session.start()
    except Exception as e:
        error_line(f"cannot connect to {options.target()}: {describe_error(e)}")
        raise SystemExit(1) from None
    # Stopped by a signal (SIGTERM): close as if the user quit.
    reactor.addSystemEventTrigger("before", "shutdown", session.close)
    try:
        front.start(session)
        name = options.login_name
        if name is not None and (interactive or not options.name_from_config):
            session.send_request("login", name)
        ending = await session.ended
    finally:
        await front.stop()
    if not ending.expected:
        error_line(ending.reason)
        raise SystemExit(1)


def _fill_standard_streams() -> None:
    """
    Put /dev/null in place of a closed standard stream (C{chat <&-}), before
    the reactor opens anything: else its epoll descriptor, or the socket,
    would take the stream's number and be read as the input.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run(argv: Optional[List[str]] = None) -> None:
    """
    The command line: C{chat [options]}.
    """
    _fill_standard_streams()
    from twisted.internet import task

    task.react(main, sys.argv[1:] if argv is None else argv)
