"""
Tests that keep the documents true to the code: every class, method and
function a Mermaid diagram in docs/design.md names exists in the code, every
request word of the dispatch table has a section in docs/protocol.md, every
error text the server can send is listed there, and every server response
shown there is a well-formed response of the standard.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
import re
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from twisted.trial.unittest import TestCase
from zope.interface.interface import InterfaceClass

import chat
from chat.core.commands import COMMANDS, help_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "docs", "design.md")
PROTOCOL = os.path.join(ROOT, "docs", "protocol.md")

#: Where the texts of error responses a client can get are written.
ERROR_SOURCES = ("chat/core", "chat/wire", "chat/transports")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# Names in the code


def _chat_modules() -> Iterator[Any]:
    for info in pkgutil.walk_packages(chat.__path__, "chat."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            yield importlib.import_module(info.name)


class CodeIndex:
    """
    The classes, interfaces and functions defined in the C{chat} package, by
    bare name; dotted names (C{chat.transports.encoding},
    C{twisted.internet.tcp.Connection}) are imported as given.
    """

    def __init__(self) -> None:
        self._by_name: Dict[str, List[Any]] = {}
        for module in [chat, *_chat_modules()]:
            for name, obj in vars(module).items():
                if not (
                    inspect.isclass(obj)
                    or inspect.isfunction(obj)
                    or isinstance(obj, InterfaceClass)
                ):
                    continue
                if getattr(obj, "__module__", "") != module.__name__:
                    continue  # imported, counted where it is defined
                found = self._by_name.setdefault(name, [])
                if obj not in found:
                    found.append(obj)

    def resolve(self, name: str) -> Tuple[Optional[Any], str]:
        """
        The object C{name} stands for, or None and why not.
        """
        if "." in name:
            # The longest importable prefix is the module; the rest are
            # attributes.
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                module = ".".join(parts[:cut])
                try:
                    obj: Any = importlib.import_module(module)
                except ImportError:
                    continue
                for part in parts[cut:]:
                    if not hasattr(obj, part):
                        return None, f"{name}: {module} has no {'.'.join(parts[cut:])}"
                    obj = getattr(obj, part)
                return obj, ""
            return None, f"{name}: no such module"
        found = self._by_name.get(name, [])
        if not found:
            return None, f"{name}: no class or function of that name in the chat package"
        if len(found) > 1:
            where = ", ".join(f"{o.__module__}.{name}" for o in found)
            return None, f"{name} is ambiguous ({where}): use a dotted name"
        return found[0], ""


def _assigned_in_source(cls: type, name: str) -> bool:
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]*)?=[^=]")
    for klass in cls.__mro__:
        if not klass.__module__.startswith("chat"):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def has_member(obj: Any, name: str) -> bool:
    """
    Whether C{obj} (a class, an interface or a module) has a member C{name}:
    a method, property or class attribute, a dataclass field, a slot, an
    annotated attribute, an attribute set on C{self} in its code, or a name
    an interface declares.
    """
    if isinstance(obj, InterfaceClass):
        return name in obj.names(all=True)
    if hasattr(obj, name):
        return True
    if not inspect.isclass(obj):
        return False
    if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
        return True
    for klass in obj.__mro__:
        slots = vars(klass).get("__slots__", ())
        if name in ((slots,) if isinstance(slots, str) else slots):
            return True
        if name in vars(klass).get("__annotations__", {}):
            return True
    return _assigned_in_source(obj, name)


# Mermaid diagrams

_MERMAID = re.compile(r"^```mermaid[ \t]*\n(.*?)^```", re.S | re.M)
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_CLASS_OPEN = re.compile(rf"^class\s+({_IDENTIFIER})\s*(?:~[^~]*~)?\s*(\{{)?\s*$")
_CLASS_MEMBER = re.compile(rf"^({_IDENTIFIER})\s*:\s*(.+)$")
_RELATION = re.compile(
    rf'^({_IDENTIFIER})\s*(?:"[^"]*"\s*)?'
    r"(?:<\|--|\*--|o--|<--|-->|--|<\|\.\.|\.\.\|>|\.\.>|<\.\.|\.\.)"
    rf'\s*(?:"[^"]*"\s*)?({_IDENTIFIER})\s*(?::.*)?$'
)
_PARTICIPANT = re.compile(rf"^(participant|actor)\s+({_IDENTIFIER})(?:\s+as\s+(.+))?$")
_ARROW = re.compile(
    rf"^({_IDENTIFIER})\s*(?:-->>|->>|-->|->|--x|-x|--\)|-\))\s*[+-]?\s*({_IDENTIFIER})\s*:\s*(.*)$"
)
_CALL = re.compile(rf"^({_IDENTIFIER})\s*\(")
_SEQUENCE_KEYWORDS = re.compile(
    r"^(note|loop|alt|else|opt|par|and|end|rect|critical|option|break|"
    r"activate|deactivate|autonumber|box|title|create|destroy)\b",
    re.I,
)


def mermaid_blocks(text: str) -> List[Tuple[int, str]]:
    """
    The Mermaid blocks of a Markdown text, each with the line it starts on.
    """
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _MERMAID.finditer(text)]


def _member_name(text: str) -> Optional[str]:
    """
    The name of a class-diagram member (an attribute or a method).
    """
    text = text.strip().lstrip("+-#~").strip()
    if text.startswith("<<"):
        return None
    match = re.match(_IDENTIFIER, text)
    return match.group() if match else None


#: A name a diagram takes from the code: the line it is on, a class (or
#: module) and, for a member or a call, the member's name.
Name = Tuple[int, str, Optional[str]]


def diagram_names(text: str) -> List[Name]:
    """
    Every name the Mermaid diagrams of a Markdown text take from the code:
    C{(line, name, None)} for a class or participant, C{(line, owner,
    member)} for a class-diagram member or a call in a sequence diagram (a
    message whose text starts with C{name(}, checked on the participant that
    receives it). Participants declared with C{actor} are outside the code
    and not checked.
    """
    names: List[Name] = []
    for start, block in mermaid_blocks(text):
        lines = block.splitlines()
        kind = lines[0].strip() if lines else ""
        if kind.startswith("classDiagram"):
            names.extend(_class_diagram(start, lines))
        elif kind.startswith("sequenceDiagram"):
            names.extend(_sequence_diagram(start, lines))
    return names


def _class_diagram(start: int, lines: List[str]) -> List[Name]:
    names: List[Name] = []
    seen: Set[str] = set()

    def add_class(number: int, name: str) -> None:
        if name not in seen:
            seen.add(name)
            names.append((number, name, None))

    inside: Optional[str] = None
    for offset, raw in enumerate(lines[1:], 1):
        number = start + offset
        line = raw.strip()
        if not line or line.startswith("%%"):
            continue
        if inside is not None:
            if line == "}":
                inside = None
                continue
            member = _member_name(line)
            if member is not None:
                names.append((number, inside, member))
            continue
        match = _CLASS_OPEN.match(line)
        if match:
            add_class(number, match.group(1))
            if match.group(2):
                inside = match.group(1)
            continue
        if line.startswith(("direction", "note", "<<")):
            continue
        match = _RELATION.match(line)
        if match:
            add_class(number, match.group(1))
            add_class(number, match.group(2))
            continue
        match = _CLASS_MEMBER.match(line)
        if match:
            add_class(number, match.group(1))
            member = _member_name(match.group(2))
            if member is not None:
                names.append((number, match.group(1), member))
            continue
        raise ValueError(f"line {number}: a class-diagram line this test cannot read: {line!r}")
    return names


def _sequence_diagram(start: int, lines: List[str]) -> List[Name]:
    names: List[Name] = []
    code: Dict[str, Optional[str]] = {}  # alias -> name in the code (None: an actor)

    def participant(number: int, alias: str) -> Optional[str]:
        if alias not in code:
            code[alias] = alias
            names.append((number, alias, None))
        return code[alias]

    for offset, raw in enumerate(lines[1:], 1):
        number = start + offset
        line = raw.strip()
        if not line or line.startswith("%%") or _SEQUENCE_KEYWORDS.match(line):
            continue
        match = _PARTICIPANT.match(line)
        if match:
            kind, alias, shown = match.groups()
            if kind == "actor":
                code[alias] = None
            else:
                # The text shown starts with the name in the code; the rest
                # (after a space or a line break) is a comment.
                name = re.match(r"[A-Za-z0-9_.]*", (shown or alias).strip())
                code[alias] = name.group() if name and name.group() else (shown or alias)
                names.append((number, code[alias], None))
            continue
        match = _ARROW.match(line)
        if match:
            sender, receiver, label = match.groups()
            participant(number, sender)
            target = participant(number, receiver)
            call = _CALL.match(label.strip())
            if call and target is not None:
                names.append((number, target, call.group(1)))
            continue
        raise ValueError(f"line {number}: a sequence-diagram line this test cannot read: {line!r}")
    return names


def diagram_problems(text: str, index: CodeIndex) -> Tuple[List[str], int]:
    """
    What the diagrams of C{text} name that is not in the code, and how many
    names were checked.
    """
    problems: List[str] = []
    checked = 0
    for number, owner, member in diagram_names(text):
        checked += 1
        obj, why = index.resolve(owner)
        if obj is None:
            problems.append(f"line {number}: {why}")
        elif member is not None and not has_member(obj, member):
            problems.append(f"line {number}: {owner} has no {member}")
    return problems, checked


# Error texts in the code

#: Names of loggers, whose error() writes the log, not a response.
_LOGGERS = ("log", "_log", "logger")

#: Error texts passed on as attributes, and where their values are swept.
KNOWN_INDIRECT = {
    # dispatch() answers a DecodeError with its reason: every
    # DecodeError(...) in the code is swept.
    "request.reason",
}


def _callee(node: ast.Call) -> Optional[str]:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _logs(node: ast.Call) -> bool:
    """
    Whether C{node} calls a logger (C{self.log.error(...)}): a log line,
    not a response.
    """
    owner = node.func.value if isinstance(node.func, ast.Attribute) else None
    if isinstance(owner, ast.Attribute):
        return owner.attr in _LOGGERS
    return isinstance(owner, ast.Name) and owner.id in _LOGGERS


class ErrorTexts:
    """
    The texts of every C{error} response the server can send, read from the
    source with C{ast}: the first argument of every C{.error(...)} call and
    of every C{DecodeError(...)}, and the text of every C{Notice("error",
    ...)}. A text given as a variable is followed to where it comes from:
    a parameter to the arguments of every call of its function, a variable
    set from a call to the values that function returns, a subscript of a
    module-level dict of strings to each of its values. An f-string becomes
    a pattern with C{.+?} for each field.

    @ivar patterns: regular expressions, one per text.
    @ivar unresolved: texts that could not be followed, with where they are.
    """

    def __init__(self, directories: Tuple[str, ...]) -> None:
        self.patterns: Set[str] = set()
        self.unresolved: List[str] = []
        self._functions: Dict[str, List[Tuple[ast.FunctionDef, str]]] = {}
        self._calls: Dict[str, List[Tuple[ast.Call, Optional[ast.FunctionDef], str]]] = {}
        self._dicts: Dict[Tuple[str, str], List[str]] = {}
        self._followed: Set[Tuple[str, int, int]] = set()
        sites: List[Tuple[ast.expr, Optional[ast.FunctionDef], str]] = []
        for directory in directories:
            for name in sorted(os.listdir(os.path.join(ROOT, directory))):
                if name.endswith(".py"):
                    path = f"{directory}/{name}"
                    tree = ast.parse(read(os.path.join(ROOT, path)), path)
                    sites.extend(self._index(tree, path))
        for node, function, path in sites:
            self._follow(node, function, path)

    def _index(self, tree: ast.Module, path: str) -> List[Tuple[ast.expr, Any, str]]:
        for statement in tree.body:
            if (
                isinstance(statement, ast.Assign)
                and isinstance(statement.value, ast.Dict)
                and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
            ):
                values = statement.value.values
                if all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values):
                    key = (path, statement.targets[0].id)
                    self._dicts[key] = [v.value for v in values]  # type: ignore[attr-defined]
        sites: List[Tuple[ast.expr, Any, str]] = []

        def visit(node: ast.AST, function: Optional[ast.FunctionDef]) -> None:
            if isinstance(node, ast.FunctionDef):
                self._functions.setdefault(node.name, []).append((node, path))
                function = node
            if isinstance(node, ast.Call) and not _logs(node):
                name = _callee(node)
                if name is not None:
                    self._calls.setdefault(name, []).append((node, function, path))
                text = self._error_argument(node, name)
                if text is not None:
                    sites.append((text, function, path))
            for child in ast.iter_child_nodes(node):
                visit(child, function)

        visit(tree, None)
        return sites

    @staticmethod
    def _error_argument(node: ast.Call, name: Optional[str]) -> Optional[ast.expr]:
        args = node.args
        if name == "error" and args:
            return args[0]
        if name == "DecodeError":
            if args:
                return args[0]
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    return keyword.value
        if (
            name == "Notice"
            and len(args) >= 2
            and isinstance(args[0], ast.Constant)
            and args[0].value == "error"
        ):
            return args[1]
        return None

    def _follow(self, node: ast.expr, function: Optional[ast.FunctionDef], path: str) -> None:
        key = (path, node.lineno, node.col_offset)
        if key in self._followed:
            return
        self._followed.add(key)
        where = f"{path}:{node.lineno}"
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                self.patterns.add(re.escape(node.value))
            elif node.value is not None:
                self.unresolved.append(f"{where}: {node.value!r} is not a text")
            return
        if isinstance(node, ast.JoinedStr):
            self._joined(node, path)
            return
        if isinstance(node, ast.IfExp):
            self._follow(node.body, function, path)
            self._follow(node.orelse, function, path)
            return
        if isinstance(node, ast.Name) and function is not None:
            if self._follow_parameter(node.id, function):
                return
            if self._follow_assignment(node.id, function, path):
                return
        self.unresolved.append(f"{where}: {ast.unparse(node)}")

    def _joined(self, node: ast.JoinedStr, path: str) -> None:
        parts: List[List[str]] = [[]]
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts = [p + [re.escape(value.value)] for p in parts]
                continue
            assert isinstance(value, ast.FormattedValue)
            inner = value.value
            choices = None
            if isinstance(inner, ast.Subscript) and isinstance(inner.value, ast.Name):
                choices = self._dicts.get((path, inner.value.id))
            if choices:
                parts = [p + [re.escape(c)] for p in parts for c in choices]
            else:
                parts = [p + [".+?"] for p in parts]
        for p in parts:
            self.patterns.add("".join(p))

    def _follow_parameter(self, name: str, function: ast.FunctionDef) -> bool:
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        if name not in params:
            return False
        position = params.index(name)
        method = bool(params) and params[0] in ("self", "cls")
        for call, caller, path in self._calls.get(function.name, []):
            argument: Optional[ast.expr] = None
            for keyword in call.keywords:
                if keyword.arg == name:
                    argument = keyword.value
            index = position - (1 if method and isinstance(call.func, ast.Attribute) else 0)
            if argument is None and 0 <= index < len(call.args):
                argument = call.args[index]
            if argument is not None:
                self._follow(argument, caller, path)
        return True

    def _follow_assignment(self, name: str, function: ast.FunctionDef, path: str) -> bool:
        sources = [
            node.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        ]
        if not sources:
            return False
        for source in sources:
            callee = _callee(source) if isinstance(source, ast.Call) else None
            if callee is None or callee not in self._functions:
                self.unresolved.append(f"{path}:{source.lineno}: {name} = {ast.unparse(source)}")
                continue
            for definition, definition_path in self._functions[callee]:
                for node in ast.walk(definition):
                    if isinstance(node, ast.Return) and node.value is not None:
                        self._follow(node.value, definition, definition_path)
        return True


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# Server responses shown in the protocol document

#: A response as the document shows it in a wire example: the connection's
#: name, "<-", the JSON object, and "⏎" for the newline after it.
_SHOWN_RESPONSE = re.compile(r"^\s*(?:\S+ )?<- (\{.*?)(?:⏎)?\s*$")
_SHOWN_REQUEST = re.compile(r"^\s*(\S+) -> (\{.*)$")

#: The keys extensions add to a response (docs/protocol.md, "Extensions: cap").
EXTENSION_KEYS = {"room", "rooms", "joined", "to", "with", "caps"}


def _lines() -> List[str]:
    return read(PROTOCOL).splitlines()


class DiagramTests(TestCase):
    """
    The diagrams of docs/design.md name only what is in the code.
    """

    def test_design_names_exist(self):
        """
        Every class, participant, member and call the Mermaid diagrams of
        docs/design.md name exists in the code.
        """
        problems, checked = diagram_problems(read(DESIGN), CodeIndex())
        self.assertEqual(problems, [], "\n".join(problems))
        # A parser that silently found nothing would pass the check above.
        self.assertGreater(checked, 100)

    def test_design_has_the_diagrams(self):
        """
        docs/design.md has a class diagram and the sequence diagrams issue
        12 asks for.
        """
        text = read(DESIGN)
        kinds = [block.split(None, 1)[0] for _, block in mermaid_blocks(text)]
        self.assertGreaterEqual(kinds.count("classDiagram"), 1)
        self.assertGreaterEqual(kinds.count("sequenceDiagram"), 4)
        for heading in ("Login", "Sending a message", "Logout", "A slow consumer"):
            self.assertRegex(text, rf"(?m)^#+ {heading}")

    def test_wrong_names_are_found(self):
        """
        The check reports a class, a member, a participant and a call that
        do not exist, and accepts those that do.
        """
        text = "\n".join(
            [
                "```mermaid",
                "classDiagram",
                "class ChatService {",
                "  +publish(session, text)",
                "  +no_such_method()",
                "  +window: Window",
                "  +no_such_field: int",
                "}",
                "class NoSuchClass",
                "ChatService --> Window",
                "Session ..> MissingToo",
                "```",
                "```mermaid",
                "sequenceDiagram",
                "actor C as a client",
                "participant P as ChatServerProtocol",
                "participant E as chat.transports.encoding",
                "participant X as NotAClass",
                "C->>P: dataReceived(data)",
                "P->>E: legacy(event, fmt)",
                "P->>E: not_a_function()",
                "P-->>C: bytes",
                "P->>P: _no_such_pump()",
                "```",
            ]
        )
        problems, _ = diagram_problems(text, CodeIndex())
        found = " | ".join(problems)
        for wrong in (
            "ChatService has no no_such_method",
            "ChatService has no no_such_field",
            "NoSuchClass: no class",
            "MissingToo: no class",
            "NotAClass: no class",
            "chat.transports.encoding has no not_a_function",
            "ChatServerProtocol has no _no_such_pump",
        ):
            self.assertIn(wrong, found)
        self.assertEqual(len(problems), 7, problems)

    def test_unreadable_diagram_line(self):
        """
        A diagram line the check cannot read fails the check instead of being
        skipped.
        """
        text = "```mermaid\nsequenceDiagram\nA =>> B: login()\n```\n"
        self.assertRaises(ValueError, diagram_names, text)

    def test_ambiguous_name(self):
        """
        A bare name defined in two modules must be given with its module.
        """
        index = CodeIndex()
        obj, why = index.resolve("Options")
        self.assertIsNone(obj)
        self.assertIn("ambiguous", why)
        obj, _ = index.resolve("chat.server.tap.Options")
        self.assertIsNotNone(obj)


class ProtocolDocumentTests(TestCase):
    """
    docs/protocol.md documents every request word and every error text.
    """

    def test_every_request_word(self):
        """
        Every request word of the dispatch table has a section of its own.
        """
        text = read(PROTOCOL)
        missing = [
            word for word in COMMANDS if not re.search(rf"(?m)^#+ .*`{re.escape(word)}`", text)
        ]
        self.assertEqual(missing, [], "request words with no section in docs/protocol.md")

    def test_every_error_text(self):
        """
        Every error text the server can send appears in docs/protocol.md.
        """
        texts = ErrorTexts(ERROR_SOURCES)
        unresolved = [
            f"cannot follow {u}"
            for u in texts.unresolved
            if u.split(": ", 1)[1] not in KNOWN_INDIRECT
        ]
        document = _flat(read(PROTOCOL))
        missing = [
            f"not in docs/protocol.md: {p}"
            for p in sorted(texts.patterns)
            if not re.search(_flat(p), document)
        ]
        problems = unresolved + missing
        self.assertEqual(problems, [], "\n".join(problems))

    def test_error_texts_are_followed(self):
        """
        The sweep finds texts given directly, through a parameter (the
        reason of a connection closed before login), through a function's
        return values (a message's faults, admission's refusals) and through
        a dict of reasons (the JSON grammar's), so that none can hide from
        the check above.
        """
        patterns = ErrorTexts(ERROR_SOURCES).patterns
        for text in (
            "Username taken",
            "Disconnected for flooding",
            "Too many requests waiting; some were not handled. Slow down",
            "No login within 60 seconds; closing",
            "Message is empty",
            "Too many connections from your address (limit 100)",
            "Server full: too many connections; try again later",
            "Malformed JSON: expected ':' after a key",
            "Request too large (limit 65536 bytes)",
            "Unknown request 'dance'; send help for the list",
        ):
            self.assertTrue(
                any(re.fullmatch(p, text) for p in patterns), f"the sweep misses {text!r}"
            )
        self.assertGreater(len(patterns), 25)

    def test_shown_responses_are_standard(self):
        """
        Every server response the document shows in full is one JSON object
        with the standard's four keys first, a string timestamp and one of
        the four response words; only a client the document shows asking
        for extensions (cap) gets more: extension keys after the four, and
        the response word presence.
        """
        shown = extended = 0
        asked = set()
        for line in _lines():
            request = _SHOWN_REQUEST.match(line)
            if request and re.search(r'"request": ?"cap"', request.group(2)):
                asked.add(request.group(1))
            match = _SHOWN_RESPONSE.match(line)
            if not match:
                continue
            shown += 1
            response = json.loads(match.group(1))
            keys = list(response)
            self.assertEqual(keys[:4], ["timestamp", "sender", "response", "content"], line)
            self.assertIsInstance(response["timestamp"], str)
            words = ("error", "info", "message", "history")
            if line.split()[0] in asked:
                extended += len(keys) > 4
                self.assertLessEqual(set(keys[4:]), EXTENSION_KEYS, line)
                words += ("presence",)
            else:
                self.assertEqual(len(keys), 4, line)
            self.assertIn(response["response"], words, line)
        self.assertGreater(shown, 30)
        self.assertGreater(extended, 5)

    def test_shown_texts_are_the_servers(self):
        """
        Every error the document shows in a response is one the code can
        send, and the help text it shows is the server's.
        """
        patterns = ErrorTexts(ERROR_SOURCES).patterns
        shown = [json.loads(m.group(1)) for m in map(_SHOWN_RESPONSE.match, _lines()) if m]
        errors = [r["content"] for r in shown if r["response"] == "error"]
        unknown = [e for e in errors if not any(re.fullmatch(p, e) for p in patterns)]
        self.assertEqual(unknown, [])
        self.assertGreater(len(errors), 20)
        helps = [r["content"] for r in shown if r["content"] == help_text()]
        self.assertEqual(len(helps), 2)
