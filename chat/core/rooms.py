"""
A room: its members and its history window. The lobby is the standard's
single chat; other rooms exist while someone is in them (their history
stays in the store, and a room made again reads its window back).

Each room keeps, until its membership changes, the tuple of its members'
clients a broadcast goes to (a message costs the same in a room of N as in
the lobby of N, and nothing per room that is quiet), and, kept up to date
as they come, go and ask, the members that want to be told who comes and
goes (so an arrival in a room of N costs what telling them costs, not a
look at all N).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from chat.core.history import Window
from chat.core.interfaces import IChatClient

if TYPE_CHECKING:
    from chat.core.session import Session


class Room:
    """
    One room.

    @ivar name: its name, in lower case.
    @ivar window: its last messages.
    @ivar members: its sessions, in the order they came in, each with its
        history cursor: the id of the oldest message of this room it was
        shown, where its next page of older history ends (None: shown none).
        Kept here, not in the session, as a dictionary per session would
        cost about 200 bytes for each idle connection.
    @ivar joining: while its window is being read from the store (a room
        made anew), the sessions waiting to come in; None once it is read.
    """

    def __init__(self, name: str, history_limit: int) -> None:
        self.name = name
        self.window = Window(history_limit, room=name)
        self.members: Dict["Session", Optional[int]] = {}
        self.joining: Optional[List["Session"]] = None
        self._recipients: Optional[Tuple[IChatClient, ...]] = None
        self._watchers: Dict["Session", None] = {}

    def __repr__(self) -> str:
        return f"<Room {self.name} ({len(self.members)} in it)>"

    @property
    def empty(self) -> bool:
        """
        Whether nobody is in it, or on the way in.
        """
        return not self.members and not self.joining

    def add(self, session: "Session") -> None:
        self.members[session] = None
        self._recipients = None
        self.update_watcher(session)

    def cursor(self, session: "Session") -> Optional[int]:
        """
        Where C{session}'s next page of this room's older history ends.
        """
        return self.members.get(session)

    def set_cursor(self, session: "Session", message_id: Optional[int]) -> None:
        """
        C{session} was shown this room's messages from C{message_id} on (a
        session that has left meanwhile stays out).
        """
        if session in self.members:
            self.members[session] = message_id

    def remove(self, session: "Session") -> None:
        self.members.pop(session, None)
        self._recipients = None
        self._watchers.pop(session, None)

    def update_watcher(self, session: "Session") -> None:
        """
        C{session} (a member) was granted extensions: tell it who comes and
        goes if it asked for that.
        """
        if "presence" in session.caps:
            self._watchers[session] = None
        else:
            self._watchers.pop(session, None)

    def recipients(self) -> Tuple[IChatClient, ...]:
        """
        The clients of its members: whom a message in it goes to.
        """
        recipients = self._recipients
        if recipients is None:
            recipients = self._recipients = tuple(s.client for s in self.members)
        return recipients

    def watchers(self) -> Tuple["Session", ...]:
        """
        Its members that asked to be told who comes and goes.
        """
        return tuple(self._watchers)

    def usernames(self) -> List[str]:
        return [s.username for s in self.members if s.username]
