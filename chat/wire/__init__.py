"""
The wire format of the KTN chat protocol, shared by the server and the
client: L{chat.wire.framing} (bytes to JSON values) and
L{chat.wire.messages} (values to requests, responses to bytes).
"""

from chat.wire.framing import MAX_VALUE_SIZE, DecodeError, StreamDecoder
from chat.wire.messages import (
    Request,
    encode_json,
    encode_request,
    encode_response,
    format_timestamp,
    is_encodable,
    parse_request,
)

__all__ = [
    "MAX_VALUE_SIZE",
    "DecodeError",
    "Request",
    "StreamDecoder",
    "encode_json",
    "encode_request",
    "encode_response",
    "format_timestamp",
    "is_encodable",
    "parse_request",
]
