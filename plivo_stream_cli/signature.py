"""Plivo's request signature V3: compute, validate, and explain a mismatch.

Pure (standard library only). The algorithm mirrors the plivo SDK's `plivo.utils.signature_v3`,
the reference implementation; shared/protocol.md has it written out with test vectors.

Plivo signs the http(s) form of a WebSocket URL (wss -> https, ws -> http), so every function
here converts a ws(s):// URL to that form first. Percent-escapes in the query are decoded as
UTF-8 (the Python SDK only copes with ASCII there).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import itertools
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeAlias
from urllib.parse import parse_qs, urlparse, urlunparse

from plivo_stream_cli.errors import UsageError

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
METHODS = ("GET", "POST")
NONCE_DIGITS = 20

Params: TypeAlias = Mapping[str, "str | Sequence[str]"]

_TO_HTTP = {"ws": "http", "wss": "https"}
_TO_WS = {"http": "ws", "https": "wss"}
_OTHER_SCHEME = {"http": "https", "https": "http"}
_DEFAULT_PORT = {"http": 80, "https": 443}
# RFC 3986 reg-name characters (unreserved, pct-encoded, sub-delims): what a Host may name.
_REG_NAME = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form: a path (and query), printable ASCII


class UnsignableURL(ValueError):
    """The URL a request was signed for cannot be built from it (a broken Host or target).

    Such a request can carry no valid signature: servers refuse it as they refuse a bad one.
    """


def valid_host(host: str) -> bool:
    """Whether `host` is a usable `Host` header value: `name[:port]` or `[IPv6][:port]`."""
    if host.startswith("["):
        literal, bracket, rest = host[1:].partition("]")
        if not bracket:
            return False
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
        return not rest or (rest.startswith(":") and _valid_port(rest[1:]))
    name, colon, port = host.partition(":")
    return _REG_NAME.fullmatch(name) is not None and (not colon or _valid_port(port))


def _valid_port(port: str) -> bool:
    return _PORT.fullmatch(port) is not None and int(port) <= 65535


def request_url(target: str, host: str, public_url: str | None = None) -> str:
    """The http(s) URL Plivo signed for a request to `target` (its path and query).

    Behind a tunnel that is `public_url`'s scheme and host (ws(s) read as http(s)); otherwise
    `http://` and the request's `Host` header. Raises `UnsignableURL` when either is unusable
    (missing, empty, broken IPv6 brackets, a bad port, a target that is not a path).
    """
    if not _TARGET.fullmatch(target):
        raise UnsignableURL(f"request target {target[:64]!r} is not a path: cannot check its URL")
    if public_url:
        public = urlparse(public_url)
        scheme = _TO_HTTP.get(public.scheme, public.scheme)
        base = f"{scheme}://{public.netloc}"
    elif not host:
        raise UnsignableURL("no Host header: cannot build the URL the signature covers")
    elif not valid_host(host):
        raise UnsignableURL(f"unusable Host header {host[:64]!r}: cannot build the signed URL")
    else:
        base = f"http://{host}"
    url = base + target
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise UnsignableURL(f"cannot build the signed URL from {url[:96]!r}: {exc}") from None
    if parsed.scheme not in _DEFAULT_PORT or not parsed.netloc:
        raise UnsignableURL(f"cannot build the signed URL from {url[:96]!r}")
    return url


def http_form(url: str) -> str:
    """`url` with ws:// turned into http:// and wss:// into https:// (others unchanged)."""
    scheme, sep, rest = url.partition("://")
    new = _TO_HTTP.get(scheme.lower()) if sep else None
    return f"{new}://{rest}" if new else url


def compute_v3(
    url: str,
    nonce: str,
    auth_token: str,
    *,
    method: str = "GET",
    params: Params | None = None,
) -> str:
    """The `X-Plivo-Signature-V3` value Plivo would send for this request.

    `params` are the POST form fields; with GET they are merged into the query (URL wins), as the
    SDK does.
    """
    return _sign(_signed_string(_require_http(http_form(url)), method, params), nonce, auth_token)


def validate_v3(
    url: str,
    nonce: str | None,
    signature_header: str | None,
    auth_token: str,
    *,
    method: str = "GET",
    params: Params | None = None,
) -> bool:
    """True when one of the comma-separated signatures in the header matches (constant time).

    A missing nonce or header counts as a failure.
    """
    if not nonce or not signature_header:
        return False
    expected = compute_v3(url, nonce, auth_token, method=method, params=params)
    return _matches(expected, signature_header)


def diagnose(
    url: str,
    nonce: str | None,
    signature_header: str | None,
    auth_token: str,
    *,
    method: str = "GET",
    params: Params | None = None,
    alt_hosts: Sequence[str] = (),
    alt_ports: Sequence[int] = (),
) -> str | None:
    """After `validate_v3` failed: the nearby URL the signature WOULD match, or None.

    Tries the other scheme, each of `alt_hosts` (host or host:port), the port added (the scheme's
    default or one of `alt_ports`) or dropped, a trailing slash added or removed, the query
    dropped, and the ws(s):// spelling instead of http(s):// — alone and combined, fewest changes
    first. Behind a tunnel this names the public URL the server should validate against.
    """
    if not nonce or not signature_header:
        return None
    original = _Parts.of(_require_http(http_form(url)))
    alt_hosts = [h for h in alt_hosts if valid_host(h)]  # from the network: may be anything
    for variant in _variants(original, alt_hosts, alt_ports):
        candidate = variant.url()
        signed = _signed_string(candidate, method, params)
        if _matches(_sign(signed, nonce, auth_token), signature_header):
            return candidate
    return None


def new_nonce() -> str:
    """A fresh random nonce shaped like Plivo's (20 decimal digits)."""
    return f"{secrets.randbelow(10**NONCE_DIGITS):0{NONCE_DIGITS}d}"


def sign_headers(
    url: str,
    auth_token: str,
    *,
    method: str = "GET",
    params: Params | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The two headers Plivo would send for this request (a fresh nonce unless one is given)."""
    nonce = new_nonce() if nonce is None else nonce
    signature = compute_v3(url, nonce, auth_token, method=method, params=params)
    return {SIGNATURE_HEADER: signature, NONCE_HEADER: nonce}


def _require_http(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in _DEFAULT_PORT or not parsed.netloc:
        raise UsageError(
            f"cannot sign {url!r}: give a full URL starting with https://, http://, wss:// or ws://"
        )
    return url


def _sign(signed: str, nonce: str, auth_token: str) -> str:
    digest = hmac.new(
        auth_token.encode("utf-8"), f"{signed}.{nonce}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _matches(expected: str, header: str) -> bool:
    want = expected.encode("ascii")
    # No early exit: every candidate is compared, each in constant time.
    results = [hmac.compare_digest(want, s.strip().encode("utf-8")) for s in header.split(",")]
    return any(results)


def _signed_string(url: str, method: str, params: Params | None) -> str:
    """The string that gets signed: base URL, sorted query, and (POST) the sorted form fields."""
    method = _check_method(method)
    parsed = urlparse(url)
    base = urlunparse((parsed.scheme, parsed.netloc, parsed.path, "", "", ""))
    body = _as_lists(params or {})
    query_map = _as_lists(parse_qs(parsed.query, keep_blank_values=True))
    if method == "GET" or not body:
        # The SDK lets the URL's query replace same-named params on GET.
        merged = {**body, **query_map} if method == "GET" else query_map
        query = _sorted_query(merged)
        return f"{base}?{query}" if query else base
    query = _sorted_query(query_map)
    return f"{base}?{query}{'.' if query else ''}{_sorted_fields(body)}"


def _check_method(method: str) -> str:
    upper = method.upper()
    if upper not in METHODS:
        raise UsageError(f"unsupported method {method!r}: Plivo signs GET and POST requests")
    return upper


def _as_lists(params: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    return {k: [v] if isinstance(v, str) else list(v) for k, v in params.items()}


def _sorted_query(params: dict[str, list[str]]) -> str:
    # Joined per key, then across keys, like the SDK: a key with no values leaves an empty slot.
    return "&".join("&".join(f"{k}={v}" for v in sorted(params[k])) for k in sorted(params))


def _sorted_fields(params: dict[str, list[str]]) -> str:
    return "".join(f"{k}{v}" for k in sorted(params) for v in sorted(params[k]))


@dataclass(frozen=True)
class _Parts:
    """A URL split into the pieces `diagnose` varies."""

    scheme: str
    userinfo: str
    host: str
    port: str
    path: str
    query: str

    @classmethod
    def of(cls, url: str) -> _Parts:
        parsed = urlparse(url)
        userinfo, at, hostport = parsed.netloc.rpartition("@")
        host, port = hostport, ""
        head, colon, tail = hostport.rpartition(":")
        if colon and tail.isdigit() and not hostport.endswith("]"):
            host, port = head, tail
        return cls(parsed.scheme, userinfo + at, host, port, parsed.path, parsed.query)

    def url(self) -> str:
        netloc = f"{self.userinfo}{self.host}{':' + self.port if self.port else ''}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{netloc}{self.path}{query}"


def _variants(
    original: _Parts, alt_hosts: Sequence[str], alt_ports: Sequence[int]
) -> Iterator[_Parts]:
    """Every combination of the single changes, fewest changes first, the original excluded."""
    toggled = original.path[:-1] if original.path.endswith("/") else original.path + "/"
    hosts = [(original.host, original.port)] + [
        (p.host, p.port) for p in (_Parts.of(f"http://{h}") for h in alt_hosts)
    ]
    choices = itertools.product(
        [original.scheme, _OTHER_SCHEME[original.scheme]],
        hosts,
        ["given", "none", "default", *(str(p) for p in alt_ports)],
        [original.path, toggled],
        [original.query, ""] if original.query else [""],
        [False, True],  # ws(s):// spelling instead of http(s)://
    )
    ranked: dict[str, tuple[int, _Parts]] = {}
    for scheme, (host, port), port_choice, path, query, ws in choices:
        port = {"given": port, "none": "", "default": str(_DEFAULT_PORT[scheme])}.get(
            port_choice, port_choice
        )
        parts = replace(original, scheme=scheme, host=host, port=port, path=path, query=query)
        if ws:
            parts = replace(parts, scheme=_TO_WS[scheme])
        changes = sum(
            (
                scheme != original.scheme,
                host != original.host,
                port != original.port,
                path != original.path,
                query != original.query,
                ws,
            )
        )
        key = parts.url()
        if key != original.url() and (key not in ranked or changes < ranked[key][0]):
            ranked[key] = (changes, parts)
    for _, parts in sorted(ranked.values(), key=lambda item: item[0]):
        yield parts
