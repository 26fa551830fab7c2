"""`pstream stop`, `pstream get`, `pstream start`: Plivo's Stream REST API from the terminal.

Also owns the Plivo API flags (credentials, --api-url, --timeout, retries) and `open_client`, so
other REST commands (Application, Call) share them. httpx is imported only when a command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import AUTH_TOKEN_HELP, JSON_OPTION, add, resolve_token
from plivo_stream_cli.commands.stream_options import (
    AUDIO_TRACK,
    BIDIRECTIONAL,
    CONTENT_TYPE,
    EXTRA_HEADER,
    STATUS_CALLBACK_METHOD,
    STATUS_CALLBACK_URL,
    STREAM_TIMEOUT,
    AudioTrack,
    CallbackMethod,
    ContentType,
    checked,
    stream_options_from_flags,
)
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import UsageError

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.restapi import ApiResponse, PlivoClient
    from plivo_stream_cli.streams_table import StreamTable

API_PANEL = "Plivo API"
AUTH_ID_OPTION: Any = typer.Option(
    None,
    "--auth-id",
    help="Plivo Auth ID (or set PLIVO_AUTH_ID).",
    show_default=False,
    rich_help_panel=API_PANEL,
)
AUTH_TOKEN_OPTION: Any = typer.Option(
    None, "--auth-token", help=AUTH_TOKEN_HELP, show_default=False, rich_help_panel=API_PANEL
)
API_URL_OPTION: Any = typer.Option(
    None,
    "--api-url",
    envvar="PLIVO_API_URL",
    help="Base URL of the Plivo API (default: https://api.plivo.com).",
    show_default=False,
    rich_help_panel=API_PANEL,
)
TIMEOUT_OPTION: Any = values.number_option(
    10.0,
    "--timeout",
    what="seconds",
    low=0.0,
    high=600.0,
    above_low=True,
    metavar="SECONDS",
    help="Seconds to wait for each HTTP request.",
    rich_help_panel=API_PANEL,
)
RETRIES_OPTION: Any = values.count_option(
    3,
    "--retries",
    what="retries",
    low=0,
    high=100,
    help="Retries of GET/DELETE after a 429, a 5xx or a network error.",
    rich_help_panel=API_PANEL,
)
RETRY_WAIT_OPTION: Any = values.seconds_option(
    0.5,
    "--retry-wait",
    help="Seconds before the first retry, doubling each time (a Retry-After wins; 30 s at most).",
    rich_help_panel=API_PANEL,
)
CALL_UUID_ARGUMENT: Any = typer.Argument(
    ..., metavar="CALL_UUID", help="The call's UUID.", show_default=False
)


STOP_EPILOG = "Example: pstream stop CALL_UUID   (every stream; add STREAM_ID for one)"
GET_EPILOG = "Example: pstream get CALL_UUID --json | jq '.objects[].stream_id'"
START_EPILOG = (
    "Example: pstream start CALL_UUID wss://bot.example.com/stream --bidirectional "
    "--extra-header userId=42"
)


def register(app: Registry) -> None:
    add(app, stop, "stop", epilog=STOP_EPILOG)
    add(app, get, "get", epilog=GET_EPILOG)
    add(app, start, "start", epilog=START_EPILOG)


def open_client(
    *,
    auth_id: str | None,
    auth_token: str | None,
    api_url: str | None,
    timeout: float,
    retries: int = 3,
    retry_wait: float = 0.5,
) -> PlivoClient:
    """A PlivoClient from the shared API flags (and PLIVO_* environment variables)."""
    from plivo_stream_cli.adapters.restapi import (
        DEFAULT_API_URL,
        Credentials,
        PlivoClient,
        RetryPolicy,
    )

    if timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds, got {timeout:g}")
    token = resolve_token(auth_token, required=False)
    credentials = Credentials.resolve(auth_id, token)
    retry = RetryPolicy(attempts=retries + 1, backoff=retry_wait)
    return PlivoClient(
        credentials, api_url=api_url or DEFAULT_API_URL, timeout=timeout, retry=retry
    )


def stop(
    call_uuid: str = CALL_UUID_ARGUMENT,
    stream_id: str | None = typer.Argument(
        None,
        metavar="STREAM_ID",
        help="Stop only this stream (default: every stream of the call).",
        show_default=False,
    ),
    json_out: bool = JSON_OPTION,
    auth_id: str | None = AUTH_ID_OPTION,
    auth_token: str | None = AUTH_TOKEN_OPTION,
    api_url: str | None = API_URL_OPTION,
    timeout: float = TIMEOUT_OPTION,
    retries: int = RETRIES_OPTION,
    retry_wait: float = RETRY_WAIT_OPTION,
) -> None:
    """Stop one stream of a live call, or all of them (DELETE .../Call/CALL_UUID/Stream/)."""
    from plivo_stream_cli.adapters.restapi import stop_streams

    with open_client(
        auth_id=auth_id,
        auth_token=auth_token,
        api_url=api_url,
        timeout=timeout,
        retries=retries,
        retry_wait=retry_wait,
    ) as client:
        response = stop_streams(client, call_uuid, stream_id)
    if json_out:
        _print_json(response)
    what = f"stream {stream_id}" if stream_id else "all streams"
    output.status(f"stopped {what} of call {call_uuid}")


def get(
    call_uuid: str = CALL_UUID_ARGUMENT,
    stream_id: str | None = typer.Argument(
        None,
        metavar="STREAM_ID",
        help="Show only this stream (default: the call's list).",
        show_default=False,
    ),
    json_out: bool = JSON_OPTION,
    auth_id: str | None = AUTH_ID_OPTION,
    auth_token: str | None = AUTH_TOKEN_OPTION,
    api_url: str | None = API_URL_OPTION,
    timeout: float = TIMEOUT_OPTION,
    retries: int = RETRIES_OPTION,
    retry_wait: float = RETRY_WAIT_OPTION,
) -> None:
    """Show a call's streams, or one stream, as a table (--json: the API's JSON untouched)."""
    from plivo_stream_cli.adapters.restapi import get_streams
    from plivo_stream_cli.streams_table import stream_table

    with open_client(
        auth_id=auth_id,
        auth_token=auth_token,
        api_url=api_url,
        timeout=timeout,
        retries=retries,
        retry_wait=retry_wait,
    ) as client:
        response = get_streams(client, call_uuid, stream_id)
    if json_out:
        _print_json(response)
        return
    table = stream_table(response.json())
    if table.rows:
        _print_table(table)
    noun = "stream" if table.total == 1 else "streams"
    output.status(f"{table.total} {noun} on call {call_uuid}")


def start(
    call_uuid: str = CALL_UUID_ARGUMENT,
    url: str = typer.Argument(
        ..., metavar="WSS_URL", help="The wss:// URL of your stream server.", show_default=False
    ),
    bidirectional: bool = BIDIRECTIONAL,
    content_type: ContentType = CONTENT_TYPE,
    audio_track: AudioTrack = AUDIO_TRACK,
    stream_timeout: int | None = STREAM_TIMEOUT,
    status_callback_url: str | None = STATUS_CALLBACK_URL,
    status_callback_method: CallbackMethod = STATUS_CALLBACK_METHOD,
    extra_header: list[str] | None = EXTRA_HEADER,
    json_out: bool = JSON_OPTION,
    auth_id: str | None = AUTH_ID_OPTION,
    auth_token: str | None = AUTH_TOKEN_OPTION,
    api_url: str | None = API_URL_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Start a stream on a live call (POST .../Call/CALL_UUID/Stream/); prints the stream id.

    Takes the same stream flags as `pstream xml` (except --keep-call-alive, an XML-only
    attribute). Not retried: a retry could start a second stream.
    """
    from plivo_stream_cli.adapters.restapi import start_stream
    from plivo_stream_cli.streams_table import start_body, started_stream_id

    options = checked(
        stream_options_from_flags(
            url,
            bidirectional=bidirectional,
            content_type=content_type,
            audio_track=audio_track,
            stream_timeout=stream_timeout,
            status_callback_url=status_callback_url,
            status_callback_method=status_callback_method,
            extra_header=extra_header,
        )
    )
    body = start_body(options)
    with open_client(
        auth_id=auth_id, auth_token=auth_token, api_url=api_url, timeout=timeout
    ) as client:
        response = start_stream(client, call_uuid, body)
    stream_id = started_stream_id(response.json())
    if json_out:
        _print_json(response)
    else:
        output.data(stream_id)
    output.status(f"started stream {stream_id} on call {call_uuid}")


def _print_json(response: ApiResponse) -> None:
    """The API's body exactly as sent; `{}` stands for an empty 204.

    A body that is not JSON is an API error here too (exit 5), as it is without --json.
    """
    response.json()
    output.data(response.text if response.text.strip() else "{}")


def _print_table(table: StreamTable) -> None:
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    if not output.is_terminal():  # piped: TSV, one stream a line, ids whole
        output.tsv(table.columns, table.rows)
        return
    console = output.console()
    wide = _wide_table(Table, table, box.HEAVY_HEAD)
    unbounded = console.options.update_width(10_000)
    if Measurement.get(console, unbounded, wide).maximum <= console.width:
        console.print(wide)
        return
    # Too narrow for one row per stream: one field-per-line block per stream keeps ids whole.
    for row in table.rows:
        record = Table(show_header=False, box=box.ROUNDED)
        record.add_column(style="bold", no_wrap=True)
        record.add_column(overflow="fold")
        for name, cell in zip(table.columns, row, strict=True):
            record.add_row(name, Text(cell))
        console.print(record)


def _wide_table(table_type: Any, table: StreamTable, style: Any) -> Any:
    from rich.text import Text

    wide = table_type(*table.columns, header_style="bold", box=style)
    for row in table.rows:
        wide.add_row(*(Text(cell) for cell in row))  # API text, never rich markup
    return wide
