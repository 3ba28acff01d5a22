"""
The server's log: where it goes and in what format (C{--log-format}).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple

from twisted.logger import formatEvent, jsonFileLogObserver, textFileLogObserver
from twisted.python import usage
from twisted.python.logfile import LogFile

from chat.server.startup import fail


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
