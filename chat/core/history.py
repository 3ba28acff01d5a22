"""
The history window: the last messages of the chat, kept in memory so that
a login costs no store access and the same encoded window is shared by
every login until a new message arrives. Older messages stay in the store
and are paged through on request (L{chat.core.service.ChatService.page}).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Iterable, List, Optional, Tuple

from chat.core.events import ChatMessage, HistoryWindow

#: Messages a login gets by default. A class's lab session or a day of a
#: small community's chat fits; a login's cost stays about a millisecond
#: and 100 logins that never read share one encoded window, each holding
#: at most two 64 KiB pieces of it of its own (L{chat.transports.tcp.CHUNK}).
DEFAULT_HISTORY_LIMIT = 500


class Window:
    """
    The last C{limit} messages of C{room}, oldest first.
    """

    def __init__(self, limit: int = DEFAULT_HISTORY_LIMIT, room: Optional[str] = None) -> None:
        if limit < 0:
            raise ValueError(f"history limit must be 0 or more, not {limit}")
        self.limit = limit
        self.room = room
        self._messages: Deque[ChatMessage] = deque(maxlen=limit)
        self._event: Optional[HistoryWindow] = None
        # The window cut to a budget, per (budget, format), until it changes.
        self._trimmed: Dict[Tuple[int, str], HistoryWindow] = {}

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def newest_id(self) -> Optional[int]:
        """
        The id of the newest message, or None when the window is empty.
        """
        return self._messages[-1].id if self._messages else None

    def extend(self, messages: Iterable[ChatMessage]) -> None:
        self._messages.extend(messages)
        self._event = None
        self._trimmed = {}

    def replace(self, messages: Iterable[ChatMessage]) -> None:
        """
        Hold C{messages} instead (the store's latest, after a prune).
        """
        self._messages.clear()
        self.extend(messages)

    def event(
        self, timestamp: str, budget: Optional[int] = None, history_format: str = "string"
    ) -> HistoryWindow:
        """
        The window as a login's L{HistoryWindow}: one object (and one
        encoding) for every login until the window changes. With C{budget},
        only the newest messages whose items fit in that many bytes (also
        one object for every login with that budget).
        """
        if budget is not None:
            trimmed = self._trimmed.get((budget, history_format))
            if trimmed is None:
                kept = newest_within(list(self._messages), budget, history_format)
                if len(kept) < len(self._messages):
                    trimmed = self._trimmed[budget, history_format] = HistoryWindow(
                        kept, timestamp, room=self.room
                    )
            if trimmed is not None:
                return trimmed.stamped(timestamp)
        event = self._event
        if event is None:
            event = self._event = HistoryWindow(tuple(self._messages), timestamp, room=self.room)
        return event.stamped(timestamp)


def newest_within(
    messages: List[ChatMessage], budget: int, history_format: str
) -> List[ChatMessage]:
    """
    The newest of C{messages} whose history items fit in C{budget} bytes
    (at least one, if there are any).
    """
    total = 0
    for i in range(len(messages) - 1, -1, -1):
        total += len(messages[i].item(history_format)) + 1
        if total > budget and i < len(messages) - 1:
            return messages[i + 1 :]
    return messages
