"""
What the operator's signals mean to a running server (see
L{OperatorSignals}).
"""

from __future__ import annotations

import signal
from typing import Any, Dict, Optional

from twisted.internet import error
from twisted.logger import Logger
from twisted.python.logfile import LogFile


class OperatorSignals:
    """
    What the operator's signals mean while the server runs:

      - SIGHUP reopens the log file (after logrotate moved it), and is
        otherwise harmless (a closing terminal sends it);
      - SIGUSR1 rotates the log file as twistd does (C{twistd.log} becomes
        C{twistd.log.1}) and logs a status line;
      - SIGUSR2 logs a status line;
      - SIGQUIT shuts down as gracefully as SIGTERM (clients told, history
        stored), with exit status 0;
      - SIGTERM and SIGINT shut down as the reactor's own handlers do (the
        exit status is then the signal's); a stop signal that comes while
        the server is already shutting down logs one line. (The reactor's
        handlers would ask it to stop again, which logs a
        C{ReactorNotRunning} traceback.)

    The handlers only schedule the work on the reactor (as Twisted's own
    SIGTERM handler does), so nothing runs in the middle of a write.

    @param reactor: the reactor to schedule on and to stop.
    @param log_file: what twistd logs to, if chat made the observer (see
        L{log_observer}): a L{LogFile}, or standard output; L{None} for
        syslog or twistd's --logger.
    """

    log = Logger()
    names = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT")
    #: The signals the reactor handles itself, with the name of its handler:
    #: taken over from it once it runs, if it handles them.
    stop_signals = (("SIGTERM", "sigTerm"), ("SIGINT", "sigInt"))

    def __init__(self, reactor: Any, log_file: Any = None) -> None:
        self._reactor = reactor
        self._log_file = log_file
        self._server: Optional[Any] = None  # a ChatServerService
        self._previous: Dict[int, Any] = {}
        self._installed = False

    def install(self, server: Any) -> None:
        self._server = server
        self._installed = True
        for name in self.names:
            number = getattr(signal, name, None)
            if number is not None and number not in self._previous:
                self._previous[number] = signal.signal(number, self._received)
        # The reactor installs its handlers of SIGTERM and SIGINT as it
        # starts running, after the services have started.
        self._reactor.callWhenRunning(self._take_stop_signals)

    def _take_stop_signals(self) -> None:
        if not self._installed:
            return  # stopped before the reactor ran
        for name, method in self.stop_signals:
            number = getattr(signal, name, None)
            own = getattr(self._reactor, method, None)
            if number is None or own is None or number in self._previous:
                continue
            if signal.getsignal(number) != own:
                continue  # not the reactor's (a debugger's SIGINT): left alone
            self._previous[number] = signal.signal(number, self._received)

    def restore(self) -> None:
        self._installed = False
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
        if name in ("SIGQUIT", "SIGTERM", "SIGINT"):
            self._stop(number, name)
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

    def _stop(self, number: int, name: str) -> None:
        """
        Stop the reactor (a graceful shutdown), unless it is stopping
        already: then log one line.
        """
        try:
            self._reactor.stop()
        except error.ReactorNotRunning:
            self.log.info("Received {signal}: already shutting down", signal=name)
            return
        self.log.info("Received {signal}, shutting down.", signal=name)
        if name != "SIGQUIT" and hasattr(self._reactor, "_exitSignal"):
            # What the reactor's own handler does: twistd reads it, and ends
            # the process by this signal once the reactor has stopped.
            self._reactor._exitSignal = number
