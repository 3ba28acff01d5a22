"""
Run a benchmark scenario against our server and the asyncio baseline,
alternating, several times, and print medians, ranges and ratios.

    python -m bench fanout|idle|history|ingest|legacy|rooms [options]
    python -m bench startup|stall|legacy-login|legacy-chat|names|emoji|legacy-history|login-cpu

The second line's scenarios (L{bench.core}) run on the server's default
options and can also run the previous release (C{old}, C{--old DIR}).

See bench/README.rst for the documented command of each scenario.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from bench import core, scenarios, servers

KINDS = ("chat", "old", "asyncio", "ircd")
SERVERS = ("chat", "asyncio")


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load {load:.2f}"
    )


def report(title: str, runs: Dict[str, List[Dict[str, float]]]) -> None:
    kinds = [k for k in KINDS if runs[k]]
    print(f"\n== {title}  ({len(runs[kinds[0]])} runs each; median [min..max])")
    # Every figure any run has, in the order they first appear.
    keys = list(dict.fromkeys(key for kind in kinds for run in runs[kind] for key in run))
    width = max([len(k) for k in keys] + [10])
    for key in keys:
        cells = []
        medians = {}
        for kind in kinds:
            values = [r[key] for r in runs[kind] if key in r and not math.isnan(r[key])]
            if not values:
                cells.append(f"{kind} -")
                continue
            med = statistics.median(values)
            medians[kind] = med
            cells.append(f"{kind} {med:10.3f} [{min(values):.3f}..{max(values):.3f}]")
        ratios = [
            f"chat/{other} {medians['chat'] / medians[other]:.2f}"
            for other in kinds[1:]
            if "chat" in medians and medians.get(other)
        ]
        print(
            f"  {key.ljust(width)}  "
            + " ".join(f"{c:<38}" for c in cells)
            + " "
            + ", ".join(ratios)
        )
    sys.stdout.flush()


def repeat(
    title: str,
    runs: int,
    one: Callable[[str], Dict[str, float]],
    irc=False,
    kinds: Optional[List[str]] = None,
) -> None:
    # ngIRCd has no history and no storage; and IRC sends every JOIN to the
    # whole channel, so filling one with 10,000 members is 50M messages.
    if kinds is None:
        kinds = [k for k in SERVERS if k != "ircd" or irc]
    results: Dict[str, List[Dict[str, float]]] = {k: [] for k in KINDS}
    for i in range(runs):
        for kind in kinds:
            t = time.monotonic()
            r = one(kind)
            results[kind].append(r)
            print(
                f"  run {i + 1} {kind}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in r.items())
                + f"  ({time.monotonic() - t:.0f}s, load {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
    report(title, results)


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x]


def layouts(text: str) -> List[Tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in item.split("x")) for item in text.split(",") if item]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"not ROOMSxMEMBERS[,ROOMSxMEMBERS...]: {text!r}")
    return shapes  # type: ignore[return-value]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenario",
        choices=["fanout", "idle", "history", "ingest", "legacy", "rooms", *core.DEFAULTS],
    )
    parser.add_argument("--runs", type=int, default=None, help="default 3 (see bench/README.rst)")
    parser.add_argument(
        "--n", type=ints, default=None, help="recipients (fanout, legacy), comma separated"
    )
    parser.add_argument(
        "--k", type=ints, default=None, help="idle clients, comma separated; 0 = fill the fd limit"
    )
    parser.add_argument("--senders", type=int, default=None, help="default 20, ingest 50")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="messages in flight in total (closed loop); default 20, ingest 2000",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="deliveries/s (paced); default 50000, legacy 5000, rooms layouts 20000",
    )
    parser.add_argument("--mode", default="closed,paced")
    parser.add_argument(
        "--part",
        choices=["both", "lobby", "layouts"],
        default="both",
        help="rooms: lobby versus a room (--n, --mode), rooms layouts (--layouts), or both",
    )
    parser.add_argument(
        "--layouts",
        type=layouts,
        default=None,
        help="rooms: ROOMSxMEMBERS, comma separated, each compared with one room of "
        "ROOMS x MEMBERS (default 1000x10,100x10)",
    )
    parser.add_argument(
        "--caps",
        default="",
        help="rooms: extensions our server's clients ask for (cap), e.g. rooms; default none",
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--procs", type=int, default=3, help="load generator processes")
    parser.add_argument("--history", type=ints, default=None, help="history sizes (history)")
    parser.add_argument(
        "--logins",
        type=int,
        default=None,
        help="history: logins at 10k history (default 1000, fewer for longer); "
        "login-cpu: logins per run (default 2000 for chat, 10 for the others)",
    )
    parser.add_argument(
        "--legacy-logins", type=int, default=200, help="login-cpu: bare-JSON logins (chat only)"
    )
    parser.add_argument(
        "--messages", type=ints, default=None, help="stored messages, comma separated (core)"
    )
    parser.add_argument(
        "--length", type=int, default=100, help="characters per stored message (core)"
    )
    parser.add_argument(
        "--old", default=core.OLD, help="checkout of the previous release, with .venv (core)"
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="legacy-chat: how long they chat"
    )
    parser.add_argument("--users", type=int, default=3000, help="names: users logged in")
    parser.add_argument(
        "--servers",
        default=None,
        help="servers to run, of chat,asyncio,ircd (default: all; ircd if ngircd is installed)",
    )
    args = parser.parse_args(argv)
    global SERVERS
    ingest = args.scenario == "ingest"
    if args.senders is None:
        args.senders = 50 if ingest else 20
    if args.window is None:
        args.window = 2000 if ingest else 20
    default = "chat,asyncio,ircd" if servers.ngircd() else "chat,asyncio"
    if args.scenario not in core.DEFAULTS:
        SERVERS = tuple(k for k in (args.servers or default).split(",") if k in KINDS)
    print(machine())
    print("command: python -m bench " + " ".join(sys.argv[1:] if argv is None else argv))
    if args.scenario in core.DEFAULTS:
        core.run(args.scenario, args, repeat)
        print(f"load at the end: {os.getloadavg()[0]:.2f}")
        return
    if args.runs is None:
        args.runs = 3
    if args.logins is None:
        args.logins = 1000
    if args.scenario in ("fanout", "legacy"):
        legacy = args.scenario == "legacy"
        if args.rate is None:
            # A legacy client takes at most 1/PACING responses a second.
            args.rate = 5000.0 if legacy else 50000.0
        for n in args.n or ([100, 1000, 10000] if not legacy else [100]):
            for mode in args.mode.split(","):
                what = (
                    f"{args.window} in flight"
                    if mode == "closed"
                    else f"{args.rate:g} deliveries/s"
                )
                title = f"{args.scenario} N={n} S={args.senders} {mode} ({what})"
                repeat(
                    title,
                    args.runs,
                    lambda kind, n=n, mode=mode: scenarios.fanout(
                        kind,
                        n,
                        args.senders,
                        mode,
                        args.window,
                        args.rate,
                        args.duration,
                        args.procs,
                        legacy=legacy,
                    ),
                    irc=not legacy and n <= 1000,
                )
    elif args.scenario == "rooms":
        try:
            rooms(args)
        except RuntimeError as e:  # e.g. a server that does not know join
            raise SystemExit(f"python -m bench rooms: {e}") from None
        print(f"load at the end: {os.getloadavg()[0]:.2f}")
    elif args.scenario == "idle":
        for k in args.k or [1000, 10000, 0]:
            title = f"idle K={k}" if k else "idle K=fill the server's fd limit"
            repeat(
                title,
                args.runs,
                lambda kind, k=k: scenarios.idle(kind, k, args.procs),
                # ngIRCd registers about 80 clients/s at 10,000 (CPU per
                # registration grows with the number of clients).
                irc=0 < k <= 1000,
            )
    elif args.scenario == "history":
        for h in args.history or [10000, 100000]:
            repeat(
                f"login with history of {h} messages",
                args.runs,
                lambda kind, h=h: scenarios.history(kind, h, max(10, args.logins * 10000 // h)),
            )
    elif args.scenario == "ingest":
        repeat(
            f"durable ingest S={args.senders} ({args.window} in flight)",
            args.runs,
            lambda kind: scenarios.ingest(
                kind, args.senders, args.window, args.duration, args.procs
            ),
        )


def rooms(args) -> None:
    """
    Issue 10's performance item: lobby versus a room at the same N, then
    many small rooms versus one large one at the same deliveries/s.
    """
    caps = lambda kind: args.caps if kind == "chat" else ""  # noqa: E731
    if args.part in ("both", "lobby"):
        rate = args.rate or 50000.0
        for n in args.n or [100, 1000]:
            for mode in args.mode.split(","):
                what = f"{args.window} in flight" if mode == "closed" else f"{rate:g}/s"
                repeat(
                    f"rooms: lobby vs room r, N={n} S={args.senders} {mode} ({what})",
                    args.runs,
                    lambda kind, n=n, mode=mode: scenarios.lobby_and_room(
                        kind,
                        n,
                        caps(kind),
                        senders=args.senders,
                        mode=mode,
                        window=args.window,
                        rate=rate,
                        duration=args.duration,
                        procs=args.procs,
                    ),
                    irc=n <= 1000,
                )
    if args.part in ("both", "layouts"):
        # In 1,000 rooms of 10 every delivery is a read of its own for the
        # generator too: at 50,000/s it needs a core of the two shared ones.
        rate = args.rate or 20000.0
        for count, size in args.layouts or [(1000, 10), (100, 10)]:
            repeat(
                f"rooms: {count} rooms x {size} vs 1 room x {count * size}, paced {rate:g}/s",
                args.runs,
                lambda kind, count=count, size=size: scenarios.rooms_vs_room(
                    kind, count, size, rate, args.duration, args.procs, caps=caps(kind)
                ),
                # ngIRCd's every turn of its loop visits every connection:
                # with 10,000 it falls behind at 5,000 messages/s (and
                # registers about 80 clients/s).
                irc=count * size <= 1000,
            )


if __name__ == "__main__":
    main()
