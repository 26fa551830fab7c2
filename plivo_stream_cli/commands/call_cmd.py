"""`pstream call`: place an outbound call whose audio streams into the running `pstream serve`.

Thin: numbers and URL are checked in `calls` (pure), the serve is found through `statefile`, the
request goes through the shared Plivo API flags and `open_client` of `rest_cmd`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import JSON_OPTION, add
from plivo_stream_cli.commands.rest_cmd import (
    API_URL_OPTION,
    AUTH_ID_OPTION,
    AUTH_TOKEN_OPTION,
    TIMEOUT_OPTION,
    open_client,
)
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.restapi import PlivoClient

CALL_EPILOG = (
    "Example: pstream serve --ngrok --app 12345678901234567   (then, in another terminal) "
    "pstream call +14155550100 --from +14155550199"
)


def register(app: Registry) -> None:
    add(app, call, "call", epilog=CALL_EPILOG)


def call(
    to: str = typer.Argument(
        ..., metavar="TO", help="The number to call, E.164 (+14155550100).", show_default=False
    ),
    from_number: str = typer.Option(
        ...,
        "--from",
        help="Caller ID: a number of your Plivo account, E.164.",
        show_default=False,
    ),
    answer_url: str | None = typer.Option(
        None,
        "--answer-url",
        help="Where Plivo fetches the call's XML (POST). Default: the running pstream serve's "
        "public /answer.",
        show_default=False,
    ),
    yes: bool = typer.Option(
        False,
        "--yes",
        "-y",
        help="Place the call without asking (required when stdin is not a terminal).",
    ),
    json_out: bool = JSON_OPTION,
    auth_id: str | None = AUTH_ID_OPTION,
    auth_token: str | None = AUTH_TOKEN_OPTION,
    api_url: str | None = API_URL_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Call a phone (POST .../Call/) and stream it into the running serve; prints the request UUID.

    A real call costs money: you are asked first unless --yes. Never retried (no double call).
    """
    from plivo_stream_cli import calls

    to = calls.e164(to, "TO")
    from_number = calls.e164(from_number, "--from")
    if not yes and not sys.stdin.isatty():
        raise UsageError("a call costs money: pass --yes to place it when stdin is not a terminal")
    target = calls.check_answer_url(answer_url) if answer_url else _serve_answer_url()
    body = calls.call_body(from_number, to, target)
    with open_client(
        auth_id=auth_id, auth_token=auth_token, api_url=api_url, timeout=timeout
    ) as client:
        if not yes:
            _confirm(client, body)
        response = client.request("POST", "Call", json=body)
    request_uuid = calls.request_uuid(response.json())
    if json_out:
        output.data(response.text)
    else:
        output.data(request_uuid)
    output.status(f"calling {to} from {from_number}: request_uuid {request_uuid}")


def _serve_answer_url() -> str:
    from plivo_stream_cli.adapters import statefile
    from plivo_stream_cli.adapters.tunnel import public_urls

    serves = [entry for entry in statefile.live_serves() if entry.public_url]
    if not serves:
        raise UsageError(
            "no running pstream serve has a public URL: start `pstream serve --ngrok` "
            "(or --public-url URL) first, or pass --answer-url"
        )
    newest = serves[-1]
    if len(serves) > 1:
        output.status(
            f"{len(serves)} serves have a public URL: using the newest (pid {newest.pid})"
        )
    assert newest.public_url is not None
    return public_urls(newest.public_url, "/")["answer"]


def _confirm(client: PlivoClient, body: dict[str, str]) -> None:
    question = (
        f"Place a call to {body['to']} from {body['from']} (answer_url {body['answer_url']}), "
        f"billed to Plivo account {client.credentials.auth_id}?"
    )
    from rich.prompt import Confirm
    from rich.text import Text

    try:  # on stderr: stdout carries only the request UUID
        placed = Confirm.ask(Text(question), console=output.console(stderr=True), default=False)
    except EOFError:
        placed = False
    if not placed:
        output.status("no call placed")
        raise typer.Exit(int(ExitCode.INTERRUPTED))
