"""
Fakes for testing code that uses the chat core, shipped with the package so
that tests of other transports can use them too.
"""

from __future__ import annotations

import json
from typing import Any, FrozenSet, List, Optional

from zope.interface import implementer

from chat.core.events import Capabilities
from chat.core.interfaces import IChatClient
from chat.transports import encoding


@implementer(IChatClient)
class FakeClient:
    """
    An L{IChatClient} that records the events the core sends it, and shows
    them as the responses a stream client would read, with the extensions
    it was granted when each was sent (as the TCP transport does).

    @ivar events: every event, as sent.
    @ivar caps: the extensions granted by the last L{Capabilities} event.
    @ivar disconnected: whether the core asked to close the connection.
    """

    def __init__(
        self, history_budget: Optional[int] = None, history_format: str = "string"
    ) -> None:
        self.history_budget = history_budget
        self.history_format = history_format
        self.events: List[Any] = []
        self.caps: FrozenSet[str] = encoding.STANDARD
        self._caps_at: List[FrozenSet[str]] = []  # per event, how it is encoded
        self.disconnected = False

    def send(self, event: Any) -> None:
        if type(event) is Capabilities:
            self.caps = event.granted
        self.events.append(event)
        self._caps_at.append(self.caps)

    def disconnect(self) -> None:
        self.disconnected = True

    @property
    def raw(self) -> List[bytes]:
        """
        Every event as the bytes a stream client reads (a broadcast batch
        may hold several responses).
        """
        return [
            b"".join(encoding.stream(e, self.history_format, caps))
            for e, caps in zip(self.events, self._caps_at)
        ]

    @property
    def received(self) -> List[Any]:
        """
        Every response sent so far, decoded, one per response.
        """
        return [json.loads(line) for d in self.raw for line in d.splitlines()]

    def take(self) -> List[Any]:
        """
        The responses sent since the last call, decoded.
        """
        out = self.received
        self.events = []
        self._caps_at = []
        return out
