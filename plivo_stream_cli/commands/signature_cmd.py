"""`pstream signature sign|check`: make and verify Plivo's V3 signature headers by hand."""

from __future__ import annotations

import re
from typing import Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Group, Registry
from plivo_stream_cli.commands.common import JSON_OPTION, add, auth_token_option, resolve_token
from plivo_stream_cli.commands.stream_options import CallbackMethod
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import CheckFailed, UsageError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

URL_ARGUMENT: Any = typer.Argument(
    ...,
    metavar="URL",
    parser=values.url_parser(values.ANY_SCHEME),
    help="The URL Plivo requests (ws(s):// is signed in its http(s) form, as Plivo does).",
)
METHOD_OPTION: Any = typer.Option(
    CallbackMethod.GET,
    "--method",
    case_sensitive=False,
    metavar="GET|POST",
    help="HTTP method (a WebSocket upgrade is a GET).",
)
PARAM_OPTION: Any = typer.Option(
    None,
    "--param",
    metavar="KEY=VALUE",
    help="A POST form field (repeatable). With GET put parameters in the URL's query.",
    show_default=False,
)


SIGNATURE_HELP = "Make or check Plivo's X-Plivo-Signature-V3 headers, e.g. to curl your own server."


def register(app: Registry) -> None:
    sig_app = typer.Typer(
        name="signature",
        help=SIGNATURE_HELP,
        no_args_is_help=True,
        rich_markup_mode=None,
        cls=Group,
        add_completion=False,
        epilog="Example: pstream signature sign wss://example.com/stream",
    )
    add(sig_app, sign, "sign")
    add(sig_app, check, "check")
    app.add_typer(sig_app, name="signature", help=SIGNATURE_HELP)


def sign(
    url: str = URL_ARGUMENT,
    method: CallbackMethod = METHOD_OPTION,
    param: list[str] | None = PARAM_OPTION,
    nonce: str | None = typer.Option(
        None, "--nonce", help="Use this nonce instead of a fresh random one.", show_default=False
    ),
    json_output: bool = JSON_OPTION,
    auth_token: str | None = auth_token_option(),
) -> None:
    """Print the two V3 headers Plivo would send, ready for curl -H or websocat -H.

    Example: pstream signature sign wss://example.com/stream
    """
    from plivo_stream_cli import signature

    token = _token(auth_token)
    params = _params(method, param)
    headers = signature.sign_headers(
        url,
        token,
        method=method.value,
        params=params,
        nonce=None if nonce is None else _nonce(nonce),
    )
    _note_http_form(url)
    if json_output:
        output.json_line(headers)
        return
    for name, value in headers.items():
        output.data(f"{name}: {value}")


def check(
    url: str = URL_ARGUMENT,
    signature_value: str = typer.Option(
        ..., "--signature", metavar="SIGNATURE", help="The X-Plivo-Signature-V3 header value."
    ),
    nonce: str = typer.Option(..., "--nonce", help="The X-Plivo-Signature-V3-Nonce header value."),
    method: CallbackMethod = METHOD_OPTION,
    param: list[str] | None = PARAM_OPTION,
    alt_host: list[str] | None = typer.Option(
        None,
        "--alt-host",
        metavar="HOST",
        help="Another host the request may have been signed for, e.g. your tunnel's (repeatable).",
        show_default=False,
    ),
    json_output: bool = JSON_OPTION,
    auth_token: str | None = auth_token_option(),
) -> None:
    """Say whether a signature is valid for URL; if not, which nearby URL it matches (exit 8).

    Example: pstream signature check https://example.com/stream --signature S --nonce N
    """
    from plivo_stream_cli import signature

    token = _token(auth_token)
    params = _params(method, param)
    nonce = _nonce(nonce)
    kwargs: dict[str, Any] = {"method": method.value, "params": params}
    valid = signature.validate_v3(url, nonce, signature_value, token, **kwargs)
    match = (
        None
        if valid
        else signature.diagnose(
            url, nonce, signature_value, token, alt_hosts=alt_host or (), **kwargs
        )
    )
    if json_output:
        output.json_line({"valid": valid, "url": signature.http_form(url), "matches": match})
    else:
        output.data("valid" if valid else "invalid")
    if not valid:
        raise CheckFailed(_mismatch(method.value, signature.http_form(url), match))


def _mismatch(method: str, url: str, match: str | None) -> str:
    if match is None:
        return (
            f"signature does not match {method} {url} nor any nearby URL "
            "(scheme, host, port, trailing slash, query): check the auth token, nonce and params"
        )
    return (
        f"signature does not match {method} {url} but matches {match}: "
        "validate against that URL (behind a proxy or tunnel, use its public URL)"
    )


def _token(flag_value: str | None) -> str:
    token = resolve_token(flag_value, required=True)
    assert token is not None  # required=True raises instead of returning None
    return token


def _nonce(nonce: str) -> str:
    if not nonce or _CONTROL.search(nonce) or "," in nonce:
        raise UsageError("--nonce must be non-empty text without commas or control characters")
    return nonce


def _params(method: CallbackMethod, items: list[str] | None) -> dict[str, list[str]]:
    if not items:
        return {}
    if method is CallbackMethod.GET:
        raise UsageError("--param is for POST form fields: with GET put parameters in the URL")
    params: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} must look like KEY=VALUE, e.g. --param Digits=12")
        params.setdefault(key, []).append(value)
    return params


def _note_http_form(url: str) -> None:
    from rich.markup import escape

    from plivo_stream_cli.signature import http_form

    if http_form(url) != url:
        output.status(
            f"signed {escape(http_form(url))}: Plivo signs the http(s) form of a WebSocket URL"
        )
