"""
The command line of the conformance checker: C{python -m chat.check HOST
PORT}, installed as C{chat-check}.

It runs every check of L{chat.check.checks.CHECKS} in order, prints one
line per check as it ends (and what was received when it did not pass),
then a summary; or, with C{--json}, one JSON report.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional, TextIO

from twisted.python import usage

from chat.check.checks import CHECKS, Result, Run, run_check
from chat.check.probe import CannotConnect, Probe
from chat.usage import ParagraphOptions

#: Exit statuses.
OK, FAILED, USAGE, CANNOT_CONNECT = 0, 1, 2, 3

DEFAULT_TIMEOUT = 5.0


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{value} is not a port number (1-65535)")
    return int(value)


class Options(ParagraphOptions):
    synopsis = "Usage: chat-check [options] HOST PORT"
    longdesc = """\
Check a chat server against the TTM4100 KTN JSON chat protocol: connect as
several clients, some sending bare JSON as the clients in the field do, some
ending each request with a newline, and test the standard's rules one by
one.

Each check prints one line: 'pass', 'FAIL' (a rule of the standard is
broken; what was received follows), 'WARN' (the standard leaves it open, but
clients in the field depend on it) or 'skip' (it could not be run; why
follows). Then a summary.

The checker logs in under names like chkXXXXXX1a (a random token per run),
posts a few messages that say they come from chat-check (and, unless
--no-filler, enough filler messages to make the history longer than 4096
bytes), logs out and closes every connection it opens, except two that it
drops on purpose to check that the server survives that.

The exit status is 0 when no check failed (warnings allowed), 1 when one
did, 2 for a usage error, 3 when the server could not be reached at all."""

    optFlags = [
        ["json", "j", "Print one JSON report instead of lines of text."],
        ["verbose", "v", "Also print what was seen for checks that passed."],
        ["no-filler", None, "Do not post filler messages to make the history long."],
        ["list", "l", "List the checks and what each checks, then exit."],
    ]
    optParameters = [
        [
            "timeout",
            "t",
            DEFAULT_TIMEOUT,
            "Seconds to wait for each answer (or connection, or close) before giving up.",
        ],
    ]

    def parseArgs(self, *args: str) -> None:
        options = [a for a in args[2:] if a.startswith("-")]
        if options:
            raise usage.UsageError(f"options go before HOST PORT: {' '.join(options)}")
        if len(args) > 2:
            raise usage.UsageError(f"too many arguments: {' '.join(args)}")
        self["host"], self["port"] = (list(args) + [None, None])[:2]

    def postOptions(self) -> None:
        if self["list"]:
            return
        if self["host"] is None or self["port"] is None:
            raise usage.UsageError("give the server's HOST and PORT")
        try:
            self["port"] = _port(self["port"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        given = self["timeout"]
        try:
            self["timeout"] = float(given)
        except ValueError:
            self["timeout"] = -1.0
        if not 0 < self["timeout"] <= 600:
            raise usage.UsageError(f"--timeout: {given} is not a number of seconds (at most 600)")


def summarize(results: List[Result]) -> Dict[str, int]:
    counts = {"pass": 0, "FAIL": 0, "WARN": 0, "skip": 0}
    for r in results:
        counts[r.status] += 1
    return counts


def summary_line(counts: Dict[str, int]) -> str:
    verdict = "FAIL" if counts["FAIL"] else "ok"
    return (
        f"{counts['pass']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings, "
        f"{counts['skip']} skipped: {verdict}"
    )


def format_result(result: Result, verbose: bool = False) -> str:
    """
    One line for a check, and an indented line saying what was seen when it
    did not pass (or, if C{verbose}, when it did).
    """
    width = max(len(c.name) for c in CHECKS)
    line = f"{result.status:<4}  {result.name:<{width}}  {result.explanation}"
    if result.detail and (verbose or result.status != "pass"):
        line += "\n" + " " * (width + 8) + result.detail
    return line


def check_server(
    host: str,
    port: int,
    timeout: float = DEFAULT_TIMEOUT,
    fill_history: bool = True,
    report=None,
) -> List[Result]:
    """
    Run every check against the server at C{host} and C{port}.

    @param report: called with each L{Result} as it is known.
    @raise CannotConnect: if the server cannot be reached at all.
    """
    Probe(host, port, "first connection", timeout=timeout).connect().close()
    run = Run(host, port, timeout, fill_history)
    results = []
    for check in CHECKS:
        result = run_check(run, check)
        results.append(result)
        if report is not None:
            report(result)
    return results


def json_report(host: str, port: int, timeout: float, results: List[Result]) -> Dict[str, Any]:
    counts = summarize(results)
    return {
        "host": host,
        "port": port,
        "timeout": timeout,
        "results": [
            {
                "name": r.name,
                "status": r.status,
                "explanation": r.explanation,
                "detail": r.detail,
            }
            for r in results
        ],
        "summary": counts,
        "exit_status": FAILED if counts["FAIL"] else OK,
    }


def main(argv: List[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """
    Run the command line; return the exit status.
    """
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        err.write(f"chat-check: {e}\n{options.synopsis}\n(--help for the options)\n")
        return USAGE
    if options["list"]:
        width = max(len(c.name) for c in CHECKS)
        for c in CHECKS:
            out.write(f"{c.name:<{width}}  {c.explanation}\n")
        return OK
    host, port, timeout = options["host"], options["port"], options["timeout"]

    def report(result: Result) -> None:
        if not options["json"]:
            out.write(format_result(result, options["verbose"]) + "\n")
            out.flush()

    if not options["json"]:
        out.write(f"chat-check: {host} port {port}, {timeout:g} s for each answer\n")
        out.flush()
    try:
        results = check_server(host, port, timeout, not options["no-filler"], report)
    except CannotConnect as e:
        if options["json"]:
            out.write(json.dumps({"host": host, "port": port, "error": str(e)}) + "\n")
        err.write(f"chat-check: {e}\n")
        return CANNOT_CONNECT
    if options["json"]:
        out.write(json.dumps(json_report(host, port, timeout, results), indent=2) + "\n")
    else:
        out.write(summary_line(summarize(results)) + "\n")
    return FAILED if summarize(results)["FAIL"] else OK


def run(argv: Optional[List[str]] = None) -> None:
    """
    The console script: C{chat-check HOST PORT}.
    """
    try:
        status = main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        sys.stderr.write("chat-check: interrupted\n")
        status = 130
    raise SystemExit(status)
