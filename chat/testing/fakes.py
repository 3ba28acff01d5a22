"""
Fakes for testing code that uses the chat core, shipped with the package so
that tests of other transports can use them too.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from zope.interface import implementer

from chat.core.interfaces import IChatClient


@implementer(IChatClient)
class FakeClient:
    """
    An L{IChatClient} that records what the core delivers to it.

    @ivar raw: every delivery, as delivered (a broadcast batch may hold
        several responses).
    @ivar disconnected: whether the core asked to close the connection.
    """

    def __init__(self, max_response_size: Optional[int] = None) -> None:
        self.max_response_size = max_response_size
        self.raw: List[bytes] = []
        self.disconnected = False

    def deliver(self, data: bytes) -> None:
        self.raw.append(data)

    def disconnect(self) -> None:
        self.disconnected = True

    @property
    def received(self) -> List[Any]:
        """
        Every response delivered so far, decoded, one per response.
        """
        return [json.loads(line) for d in self.raw for line in d.splitlines()]

    def take(self) -> List[Any]:
        """
        The responses delivered since the last call, decoded.
        """
        out = self.received
        self.raw = []
        return out
