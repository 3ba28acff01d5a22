"""
The history kept in memory, encoded the way a C{history} response carries
it.
"""

from __future__ import annotations

from typing import List, Optional

from chat.core.rules import SERVER_NAME
from chat.wire import encode_json, encode_response


class History:
    """
    Every message the server issued, kept encoded the way a C{history}
    response carries it, so a login costs one copy and no JSON encoding.

    @param item_format: C{"string"}: each item is the message response
        encoded as a JSON string (what most clients in the field expect);
        C{"object"}: each item is the message response itself.
    """

    def __init__(self, item_format: str = "string") -> None:
        if item_format not in ("string", "object"):
            raise ValueError(f"unknown history format {item_format!r}")
        self.item_format = item_format
        self._items: List[bytes] = []
        self._body = bytearray()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, message_line: bytes) -> None:
        """
        Add a message, given as its encoded C{message} response line.
        """
        obj = message_line.rstrip(b"\n")
        if self.item_format == "string":
            item = encode_json(obj.decode("utf-8")).encode("utf-8")
        else:
            item = obj
        if self._items:
            self._body += b","
        self._body += item
        self._items.append(item)

    def responses(self, timestamp: str, max_size: Optional[int] = None) -> List[bytes]:
        """
        The C{history} responses for a login: one, or with C{max_size} as many
        as needed to keep each under it (an item that alone is larger goes
        alone), in order.
        """
        template = encode_response(timestamp, SERVER_NAME, "history", [])
        cut = template.rindex(b"[]") + 1
        prefix, suffix = template[:cut], template[cut:]
        overhead = len(prefix) + len(suffix)
        if max_size is None or overhead + len(self._body) <= max_size:
            return [b"".join((prefix, self._body, suffix))]  # one copy of the body
        out: List[bytes] = []
        chunk: List[bytes] = []
        size = overhead
        for item in self._items:
            extra = len(item) + (1 if chunk else 0)
            if chunk and size + extra > max_size:
                out.append(prefix + b",".join(chunk) + suffix)
                chunk, size = [], overhead
                extra = len(item)
            chunk.append(item)
            size += extra
        out.append(prefix + b",".join(chunk) + suffix)
        return out
