"""
Counters the chat keeps as it works: plain integers, increased where things
happen (once per batch on the broadcast path, never once per recipient),
and read only when someone asks (L{chat.server.metrics} exposes them to
Prometheus). Keeping them here costs the core nothing it would notice and
ties it to no metrics library.
"""

from __future__ import annotations

from collections import Counter


class Stats:
    """
    What the core and its transports have done since start-up.

    @ivar requests: requests handled, by C{(word, outcome)}: the outcome is
        C{"handled"}, C{"malformed"}, C{"unknown"} or C{"not_logged_in"}.
    @ivar errors: C{error} responses sent, by kind.
    @ivar dropped: connections dropped by the server, by reason
        (C{"not_reading"}, C{"flooding"}, C{"too_large"}: a request over
        the size bound).
    """

    def __init__(self) -> None:
        self.logins = 0
        self.logouts = 0
        self.messages_stored = 0
        self.deliveries = 0  # message responses handed to transports
        self.bytes_delivered = 0  # their bytes, as a stream client gets them
        self.history_windows = 0
        self.history_pages = 0
        self.flood_delayed = 0
        self.skipped = 0  # messages a legacy client that reads was behind on
        self.requests: Counter = Counter()
        self.errors: Counter = Counter()
        self.dropped: Counter = Counter()
