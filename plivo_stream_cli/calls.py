"""The Call API's pure side: E.164 numbers, the body of an outbound call, the UUID Plivo answers.

Pure (no I/O): `pstream call` checks both numbers and the answer URL here before any request is
made, builds the JSON body of `POST /v1/Account/{auth_id}/Call/`, and reads `request_uuid` out of
Plivo's "call fired" answer.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from plivo_stream_cli.errors import ApiFailedError, UsageError

# E.164: a +, a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# Separators people paste along with a number ("+1 (415) 555-0100"); they carry no meaning.
_SEPARATORS = re.compile(r"[ ().\-]")


def e164(number: str, what: str) -> str:
    """`number` in E.164 form (separators dropped); UsageError naming `what` otherwise."""
    compact = _SEPARATORS.sub("", number)
    if _E164.fullmatch(compact):
        return compact
    hint = ": add the + and the country code" if compact.isdigit() else ""
    raise UsageError(
        f"{what} must be an E.164 phone number such as +14155550100, got {number!r}{hint}"
    )


def check_answer_url(url: str) -> str:
    """The URL unchanged when it is http(s)://host...; UsageError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--answer-url must be an http(s):// URL, got {url!r}")
    return url


def call_body(from_number: str, to_number: str, answer_url: str) -> dict[str, str]:
    """The JSON body of an outbound call whose XML Plivo POSTs for at `answer_url`."""
    return {
        "from": from_number,
        "to": to_number,
        "answer_url": answer_url,
        "answer_method": "POST",
    }


def request_uuid(doc: Any) -> str:
    """The `request_uuid` of Plivo's answer (a string, or a list of one for one destination)."""
    value = doc.get("request_uuid") if isinstance(doc, dict) else None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value:
        return value
    raise ApiFailedError(
        "the Plivo API accepted the call but its answer has no request_uuid: see --json"
    )
