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
        if self.optional:
            return f"{self.word} [<{self.argument}>]"
        return f"{self.word} <{self.argument}>"


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


def _help(session: "Session", content: Any) -> None:
    session.info(help_text())


COMMANDS: Dict[str, Command] = {
    c.word: c
    for c in [
        Command("login", "username", "log in (letters A-Z, a-z and digits only)", False, _login),
        Command("logout", None, "log out and disconnect", True, _logout),
        Command("msg", "message", "send a message to everyone in the chat", True, _msg),
        Command("names", None, "list the users logged in", True, _names),
        Command("help", None, "show this help", False, _help),
        Command(
            "history",
            "count",
            "show older messages, before the oldest you were shown (extension)",
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
