"""
Standard input and output for both front ends: closing them without
waiting forever, and giving the shell back their file flags.
"""

from __future__ import annotations

import fcntl
from typing import Any, Callable, Dict, Optional

from twisted.internet import defer, stdio

#: Seconds to wait for the last output to reach standard output at the end.
FLUSH_TIMEOUT = 2.0


def flush_and_close(
    reactor: Any,
    io: Optional[stdio.StandardIO],
    lost: defer.Deferred,
    then: Callable[[], None] = lambda: None,
) -> defer.Deferred:
    """
    Let L{StandardIO} write what it holds, then close it; call C{then}
    (which gives the terminal back) and fire when it is closed (C{lost}
    fired), or after L{FLUSH_TIMEOUT} seconds for a reader that stopped
    reading our output.
    """
    if io is None or lost.called:
        waiting: defer.Deferred = defer.succeed(None)
    else:
        io.loseConnection()
        waiting = defer.Deferred()
        lost.addBoth(lambda _: None if waiting.called else waiting.callback(None))
        waiting.addTimeout(FLUSH_TIMEOUT, reactor, onTimeoutCancel=lambda *_: None)

    def done(result: Any) -> Any:
        then()
        return result

    return waiting.addBoth(done)


class FileFlags:
    """
    Saves the file status flags of standard input and output, which
    L{StandardIO} makes non-blocking, so the shell gets them back as it left
    them.
    """

    def __init__(self, *fds: int) -> None:
        self._saved: Dict[int, int] = {}
        for fd in fds:
            try:
                self._saved[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
            except OSError:
                pass

    def restore(self) -> None:
        for fd, flags in self._saved.items():
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            except OSError:
                pass
        self._saved = {}
