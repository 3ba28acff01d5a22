"""
The dispatch table: each request word, its argument, who may use it, what
handles it, and the line C{help} shows for it, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from chat.core.session import Session


@dataclass(frozen=True)
class Command:
    """
    One row of the dispatch table.

    @ivar word: the request word.
    @ivar argument: how C{help} names the argument, or None if there is none.
    @ivar summary: what the request does, for C{help}.
    @ivar login_required: whether the client must be logged in.
    @ivar handler: called with the session and the request's content.
    @ivar optional: whether the argument may be left out.
    """

    word: str
    argument: Optional[str]
    summary: str
    login_required: bool
    handler: Callable[["Session", Any], None]
    optional: bool = False

    def usage(self) -> str:
        if not self.argument:
            return self.word
        arguments = " ".join(f"<{name}>" for name in self.argument.split())
        if self.optional:
            return f"{self.word} [{arguments}]"
        return f"{self.word} {arguments}"


def _login(session: "Session", content: Any) -> None:
    session.service.login(session, content)


def _logout(session: "Session", content: Any) -> None:
    session.service.logout(session)


def _msg(session: "Session", content: Any) -> None:
    session.service.publish(session, content)


def _names(session: "Session", content: Any) -> None:
    session.service.names(session)


def _history(session: "Session", content: Any) -> None:
    session.service.page(session, content)


def _join(session: "Session", content: Any) -> None:
    session.service.join(session, content)


def _leave(session: "Session", content: Any) -> None:
    session.service.leave(session, content)


def _rooms(session: "Session", content: Any) -> None:
    session.service.list_rooms(session)


def _pm(session: "Session", content: Any) -> None:
    session.service.private(session, content)


def _cap(session: "Session", content: Any) -> None:
    session.service.capabilities(session, content)


def _help(session: "Session", content: Any) -> None:
    session.info(help_text())


COMMANDS: Dict[str, Command] = {
    c.word: c
    for c in [
        Command("login", "username", "log in (letters A-Z, a-z and digits only)", False, _login),
        Command("logout", None, "log out and disconnect", True, _logout),
        Command("msg", "message", "send a message to everyone in your room", True, _msg),
        Command("names", None, "list the users in your room", True, _names),
        Command("help", None, "show this help", False, _help),
        Command(
            "join",
            "room",
            "enter a room (made if new) and make it yours; everyone starts in lobby",
            True,
            _join,
        ),
        Command(
            "leave",
            "room",
            "leave a room (by default your current one)",
            True,
            _leave,
            optional=True,
        ),
        Command("rooms", None, "list the rooms and how many are in each", True, _rooms),
        Command(
            "pm",
            "user text",
            "send a private message; pm <user> alone shows your conversation",
            True,
            _pm,
        ),
        Command(
            "cap",
            "extensions",
            "ask for extensions: rooms, private, presence (see the protocol docs)",
            False,
            _cap,
            optional=True,
        ),
        Command(
            "history",
            "count",
            "show older messages of your room, before the oldest you were shown",
            True,
            _history,
            optional=True,
        ),
    ]
}


def help_text() -> str:
    """
    The C{help} answer, made from L{COMMANDS}.
    """
    width = max(len(c.usage()) for c in COMMANDS.values())
    lines = ["Requests this server supports:"]
    lines += [f"  {c.usage().ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    return "\n".join(lines)
