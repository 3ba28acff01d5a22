"""
The client's files: the user's defaults and the input history.

- L{load_config}: C{$XDG_CONFIG_HOME/chat/config.ini} (C{~/.config/chat/} by
  default), an INI file whose C{[client]} section gives the defaults for the
  command line: C{host}, C{port}, C{connect}, C{name}, C{bell},
  C{presence}, C{extensions}.
- L{InputHistory}: the lines typed in interactive mode, kept between
  sessions in C{$XDG_DATA_HOME/chat/history} (C{~/.local/share/chat/} by
  default), one JSON string a line so that a pasted text with line breaks
  stays one entry. The file is the user's alone (mode 0600).

Every problem is a L{ConfigError} with one line that names the file.
"""

from __future__ import annotations

import configparser
import json
import os
from typing import Dict, List, Mapping, Optional

#: The options the config file may set, and what each is.
CONFIG_KEYS = {
    "host": "server host name or address",
    "port": "server TCP port",
    "connect": "a Twisted client endpoint description",
    "name": "log in under this name on connecting (interactive mode)",
    "bell": "yes to ring the terminal bell when a line mentions you",
    "presence": "no to hide who joins and leaves your rooms",
    "extensions": "no to ask the server for no extensions (a standard client)",
}

#: How many lines the history file keeps.
HISTORY_SIZE = 1000


class ConfigError(Exception):
    """
    A file of the client's cannot be used; the message is one line.
    """


def _base(env: Mapping[str, str], variable: str, default: str) -> str:
    # The XDG Base Directory rule: an unset, empty or relative value is
    # ignored.
    value = env.get(variable, "")
    if not os.path.isabs(value):
        value = os.path.join(os.path.expanduser("~"), default)
    return os.path.join(value, "chat")


def config_path(env: Mapping[str, str] = os.environ) -> str:
    """
    Where the config file is: C{$XDG_CONFIG_HOME/chat/config.ini}.
    """
    return os.path.join(_base(env, "XDG_CONFIG_HOME", ".config"), "config.ini")


def history_path(env: Mapping[str, str] = os.environ) -> str:
    """
    Where the input history is kept: C{$XDG_DATA_HOME/chat/history}.
    """
    return os.path.join(_base(env, "XDG_DATA_HOME", os.path.join(".local", "share")), "history")


def load_config(path: str) -> Dict[str, str]:
    """
    The C{[client]} settings in the file at C{path}; none if there is no
    such file.

    @raise ConfigError: the file cannot be read or parsed, or sets an
        option the client does not know.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    except configparser.Error as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{path}: not a valid INI file: {first}") from e
    if not parser.has_section("client"):
        return {}
    settings = dict(parser.items("client"))
    unknown = sorted(set(settings) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: [client] has no option {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})"
        )
    return settings


class InputHistory:
    """
    The input history file: L{load} the earlier lines, L{add} each new one.

    A history that cannot be read or written is not an error for the
    session: L{problem} says what went wrong, once, and the lines are
    simply not kept.
    """

    def __init__(self, path: str, size: int = HISTORY_SIZE) -> None:
        self.path = path
        self.size = size
        self.problem: Optional[str] = None
        self._added = 0

    def load(self) -> List[str]:
        """
        The lines kept, oldest first (at most L{size}).
        """
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                raw = f.read().splitlines()
        except FileNotFoundError:
            return []
        except OSError as e:
            self.problem = f"cannot read the input history {self.path}: {e.strerror}"
            return []
        lines = []
        for text in raw[-self.size :]:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, str):
                lines.append(line)
        return lines

    def add(self, line: str) -> None:
        """
        Append one line to the file, creating it (0600) and its directory;
        now and then cut the file back to the last L{size} lines.
        """
        if self.problem is not None:
            return
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            self._added += 1
            if self._added % 100 == 0:
                self._trim()
        except OSError as e:
            self.problem = f"cannot keep the input history in {self.path}: {e.strerror}"

    def _trim(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        if len(lines) <= self.size:
            return
        temporary = self.path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines[-self.size :]))
        os.replace(temporary, self.path)
