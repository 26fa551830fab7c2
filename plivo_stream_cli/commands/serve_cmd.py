"""`pstream serve`: the local stream server (flags only; the engine is `server` and `runner`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token
from plivo_stream_cli.commands.rest_cmd import API_URL_OPTION, AUTH_ID_OPTION
from plivo_stream_cli.commands.stream_options import (
    CONTENT_TYPE,
    EXTRA_HEADER,
    KEEP_CALL_ALIVE,
    ContentType,
)

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.tunnel import Tunnel
    from plivo_stream_cli.console.application import AppRewire

TUNNEL = "Public URL (ngrok)"
ANSWER = "Answer URL (/answer)"
APPLICATION = "Plivo Application (--app)"

SERVE_EPILOG = (
    "Example: PLIVO_AUTH_TOKEN=... pstream serve --record calls/ --play greeting.wav\n\n"
    "Then, in another terminal: pstream simulate ws://127.0.0.1:8080/stream\n\n"
    "Live with a real number: NGROK_AUTHTOKEN=... pstream serve --ngrok, then set the "
    "number's Answer URL to the printed /answer URL, or let --app APP_ID do it (and undo it).\n\n"
    "Example: pstream serve --ngrok --app 12345678901234567, then: pstream call +14155550100 "
    "--from +14155550199\n\n"
    "In front of your own bot: pstream serve --ngrok --upstream ws://127.0.0.1:8765/ws"
)


def register(app: Registry) -> None:
    add(app, serve, "serve", epilog=SERVE_EPILOG)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = values.port_option(8080, "--port", "-p", help="Port to listen on (0 picks one)."),
    path: str = typer.Option("/stream", "--path", help="WebSocket path Plivo connects to."),
    auth_token: str | None = auth_token_option(),
    public_url: str | None = typer.Option(
        None,
        "--public-url",
        metavar="URL",
        parser=values.url_parser(values.PUBLIC_SCHEMES),
        help="The public URL Plivo dials (e.g. https://abc.ngrok.app): signatures are "
        "checked against it. Default: built from the Host header.",
    ),
    record: Path | None = typer.Option(
        None, "--record", help="Record each stream (WAV per track + JSONL capture) into DIR."
    ),
    stereo: bool = typer.Option(
        False, "--stereo", help="With --record, also write a stereo call WAV (caller | played)."
    ),
    play: Path | None = typer.Option(
        None,
        "--play",
        metavar="FILE",
        help="Play this audio file to every new stream after its start event.",
    ),
    echo: bool = typer.Option(False, "--echo", help="Send the caller's own audio back."),
    upstream: str | None = typer.Option(
        None,
        "--upstream",
        metavar="URL",
        parser=values.url_parser(values.WS_SCHEMES),
        help="Your bot's WebSocket (ws:// or wss://): pass every stream through to it, both "
        "ways unchanged, signed for its URL, while serve shows, records and measures it.",
        show_default=False,
    ),
    upstream_timeout: float = values.number_option(
        5.0,
        "--upstream-timeout",
        what="seconds",
        low=0.0,
        high=300.0,
        above_low=True,
        metavar="SECONDS",
        help="With --upstream: how long to wait for the bot's WebSocket to open.",
    ),
    max_buffer: float = values.number_option(
        20.0,
        "--max-buffer",
        what="seconds",
        low=0.0,
        high=3600.0,
        above_low=True,
        metavar="SECONDS",
        help="Seconds of audio allowed in Plivo's playback queue.",
    ),
    start_timeout: float = values.seconds_option(
        10.0,
        "--start-timeout",
        above_low=True,
        help="Close connections that send no start event in time.",
    ),
    reject_replays: bool = typer.Option(
        False,
        "--reject-replays",
        help="Refuse a request whose signature and nonce were already used within "
        "--replay-window (a captured request sent again). Needs the auth token.",
    ),
    replay_window: float = values.seconds_option(
        300.0,
        "--replay-window",
        above_low=True,
        help="How long --reject-replays remembers a signature.",
    ),
    json_feed: bool = typer.Option(
        False,
        "--json",
        help="One JSON line per event on stdout (payload sizes, not payloads). The caller's "
        "media frames are counted in each stream's closing line; --media prints them too.",
    ),
    media: bool = typer.Option(
        False,
        "--media",
        help="With --json: a line per media frame as well (50 a second per stream; about a "
        "quarter of serve's CPU per frame, so off unless asked for).",
    ),
    workers: int = values.count_option(
        1,
        "--workers",
        what="processes",
        high=64,
        help="Serve from N processes sharing the port, for more calls than one core keeps up "
        "with (one process: about 400 real-time calls with --record --json; see "
        "benchmarks/README.md). Feed, control and summary still cover every stream.",
    ),
    loop: str = typer.Option(
        "auto",
        "--loop",
        metavar="auto|asyncio|uvloop",
        help="Event loop: auto takes uvloop if installed (the [fast] extra: about a tenth "
        "less CPU per frame), else asyncio's.",
    ),
    control_port: int = values.port_option(
        0,
        "--control-port",
        help="Port of the token-protected control channel on 127.0.0.1 (pstream tail, play, "
        "clear, ...); 0 picks one.",
    ),
    ngrok: bool = typer.Option(
        False, "--ngrok", help="Open an ngrok tunnel to this port.", rich_help_panel=TUNNEL
    ),
    ngrok_authtoken: str | None = typer.Option(
        None,
        "--ngrok-authtoken",
        help="ngrok auth token (prefer the NGROK_AUTHTOKEN environment variable).",
        show_default=False,
        rich_help_panel=TUNNEL,
    ),
    ngrok_domain: str | None = typer.Option(
        None, "--ngrok-domain", help="Your reserved ngrok domain.", rich_help_panel=TUNNEL
    ),
    ngrok_region: str | None = typer.Option(
        None, "--ngrok-region", help="ngrok region (us, eu, ap, ...).", rich_help_panel=TUNNEL
    ),
    bidirectional: bool = typer.Option(
        True,
        "--bidirectional/--no-bidirectional",
        help="Answer XML asks for a bidirectional stream (needed for --play/--echo).",
        rich_help_panel=ANSWER,
    ),
    content_type: ContentType = CONTENT_TYPE,
    keep_call_alive: bool = KEEP_CALL_ALIVE,
    extra_header: list[str] | None = EXTRA_HEADER,
    speak: str | None = typer.Option(
        None, "--speak", help="Text Plivo speaks before the stream starts.", rich_help_panel=ANSWER
    ),
    app_id: str | None = typer.Option(
        None,
        "--app",
        metavar="APP_ID",
        help="Point this Plivo Application's answer_url at serve's public /answer (POST) while "
        "serve runs, and put the original back on exit. Needs --ngrok or --public-url.",
        show_default=False,
        rich_help_panel=APPLICATION,
    ),
    keep_app: bool = typer.Option(
        False,
        "--keep-app",
        help="With --app: leave the Application pointing at serve after exit.",
        rich_help_panel=APPLICATION,
    ),
    restore_app: bool = typer.Option(
        False,
        "--restore-app",
        help="Put back the answer_url of Applications a serve that died left rewired (only "
        "--app's when given), then exit without serving.",
        rich_help_panel=APPLICATION,
    ),
    auth_id: str | None = AUTH_ID_OPTION,
    api_url: str | None = API_URL_OPTION,
) -> None:
    """Run a local WebSocket stream server that validates, shows and records Plivo streams."""
    import asyncio

    from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
    from plivo_stream_cli.commands.stream_options import stream_options_from_flags
    from plivo_stream_cli.console import output
    from plivo_stream_cli.console.runner import ServeUi, run_serve

    _check_upstream(upstream, play, echo)
    if media and not json_feed:
        from plivo_stream_cli.errors import UsageError

        raise UsageError("--media adds per-frame lines to the --json feed: add --json")
    token = resolve_token(auth_token, required=False)
    _check_replay_flags(reject_replays, replay_window, token)
    exposure = values.exposure(host, token)
    tunnel = _tunnel(ngrok, ngrok_authtoken, ngrok_domain, ngrok_region, public_url)
    rewire = _application(
        app_id, keep_app, restore_app, auth_id, token, api_url, ngrok or bool(public_url)
    )
    answer = stream_options_from_flags(
        "wss://placeholder.invalid/stream",
        bidirectional=bidirectional,
        keep_call_alive=keep_call_alive,
        content_type=content_type,
        extra_header=extra_header,
    )
    config = ServeConfig(
        host=host,
        port=port,
        path=path if path.startswith("/") else "/" + path,
        auth_token=token,
        public_url=public_url,
        record_dir=_record_dir(record),
        stereo=stereo,
        echo=echo,
        max_buffer=max_buffer,
        start_timeout=start_timeout,
        reject_replays=reject_replays,
        replay_window=replay_window,
        answer=answer,
        speak=speak,
        upstream=upstream,
        upstream_timeout=upstream_timeout,
    )
    if play is not None:
        from plivo_stream_cli.adapters.audiofile import load_pcm

        config.play_audio, config.play_rate = load_pcm(play)
        config.play_name = play.stem
    from plivo_stream_cli.adapters.workers import check_workers

    check_workers(workers, config)
    server = StreamServer(config)
    captures: list[str] = []
    if config.record_dir is not None:
        server.subscribe(lambda r: captures.extend(_captures_of(r)), media=False)
    ui = ServeUi(
        json_feed=json_feed,
        media=media,
        live=not json_feed and output.is_terminal(),
        banner=_banner(config),
    )
    if exposure:  # loudly: on stderr now, and in the live view's header for as long as it runs
        from rich.markup import escape

        output.warn(exposure)
        ui.banner.append(f"[bold yellow]warning:[/bold yellow] {escape(exposure)}")

    async def started(srv: StreamServer) -> None:
        ui.banner.insert(0, f"listening on [bold]{srv.local_url}[/bold]  (GET /healthz)")
        if tunnel is not None:
            from plivo_stream_cli.adapters.tunnel import go_public
            from plivo_stream_cli.console.runner import public_banner

            ui.banner[1:1] = public_banner(await go_public(srv, tunnel))
        if rewire is not None and srv.config.public_url:
            await asyncio.to_thread(rewire.apply, srv.config.public_url)

    async def stopping() -> None:
        if rewire is not None:  # before the tunnel closes: Plivo must not call a dead URL
            await asyncio.to_thread(rewire.restore)
        if tunnel is not None:
            await asyncio.to_thread(tunnel.close)

    from plivo_stream_cli.adapters import eventloop

    eventloop.choose(loop)
    code = eventloop.run(
        run_serve(
            server,
            ui,
            on_started=started,
            on_stopping=stopping,
            control_port=control_port,
            workers=workers,
            on_stopped=lambda: _report_hint(captures),
        )
    )
    raise typer.Exit(int(code))


def _captures_of(record: dict[str, object]) -> list[str]:
    files = record.get("files") if record.get("event") == "closed" else None
    paths = [f.get("path") for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    return [p for p in paths if isinstance(p, str) and p.endswith(".jsonl")]


def _report_hint(captures: list[str]) -> None:
    """How to see the recorded calls (`pstream report`), once serve has stopped."""
    import shlex

    from rich.markup import escape

    from plivo_stream_cli.console import output

    for path in captures[-3:]:
        output.status(escape(f"see the call: pstream report {shlex.quote(path)}"))
    if len(captures) > 3:
        output.status(f"({len(captures)} calls recorded; the last three shown)")


def _check_upstream(url: str | None, play: Path | None, echo: bool) -> None:
    from plivo_stream_cli.errors import UsageError

    if url is None:
        return
    from plivo_stream_cli.adapters.tap import check_upstream

    check_upstream(url)
    if play is not None or echo:
        flag = "--play" if play is not None else "--echo"
        raise UsageError(
            f"--upstream passes the bot's audio to the caller: {flag} would talk over it "
            "(inject audio with pstream play from another terminal instead)"
        )


def _check_replay_flags(reject: bool, window: float, token: str | None) -> None:
    from plivo_stream_cli.errors import ConfigError, UsageError

    if window <= 0:
        raise UsageError(f"--replay-window must be a positive number of seconds, got {window:g}")
    if reject and not token:
        raise ConfigError("--reject-replays checks signatures: set PLIVO_AUTH_TOKEN")


def _tunnel(
    ngrok: bool,
    authtoken: str | None,
    domain: str | None,
    region: str | None,
    public_url: str | None,
) -> Tunnel | None:
    if not ngrok:
        return None
    from plivo_stream_cli.adapters.tunnel import NgrokSettings, NgrokTunnel
    from plivo_stream_cli.errors import UsageError

    if public_url:
        raise UsageError("--ngrok and --public-url both set the public URL: pick one")
    from plivo_stream_cli.adapters.tunnel import check_ngrok_token
    from plivo_stream_cli.console import output

    token = resolve_token(authtoken, required=False, env="NGROK_AUTHTOKEN")
    check_ngrok_token(token)
    settings = NgrokSettings(authtoken=token, domain=domain, region=region)
    return NgrokTunnel(settings, on_status=output.status)


def _application(
    app_id: str | None,
    keep: bool,
    restore_only: bool,
    auth_id: str | None,
    token: str | None,
    api_url: str | None,
    public: bool,
) -> AppRewire | None:
    import sys

    from plivo_stream_cli.console import application
    from plivo_stream_cli.errors import UsageError

    if app_id is not None:
        application.check_app_id(app_id)
    connect = application.Connection(auth_id, token, api_url)
    if restore_only:
        try:
            application.restore_stale(connect, app_id)
        finally:
            connect.close()
        raise typer.Exit(0)
    if keep and app_id is None:
        raise UsageError("--keep-app goes with --app APP_ID")
    if app_id is not None and not public:
        raise UsageError(
            "--app needs the public URL Plivo will call: add --ngrok or --public-url https://..."
        )
    ask = _ask if sys.stdin.isatty() else None
    return application.for_serve(connect, app_id, keep=keep, ask=ask)


def _ask(question: str) -> bool:
    from rich.prompt import Confirm
    from rich.text import Text

    from plivo_stream_cli.console import output

    try:  # on stderr: stdout may be the --json feed
        return Confirm.ask(Text(question), console=output.console(stderr=True), default=True)
    except EOFError:
        return False


def _record_dir(record: Path | None) -> Path | None:
    if record is None:
        return None
    from plivo_stream_cli.adapters.server import prepare_record_dir

    return prepare_record_dir(record)


def _banner(config: object) -> list[str]:
    from plivo_stream_cli.adapters.server import ServeConfig

    assert isinstance(config, ServeConfig)
    lines = []
    if config.auth_token:
        target = config.public_url or "the Host header's URL"
        lines.append(f"signature V3 checked against {target}")
        if config.reject_replays:
            lines.append(f"replayed signatures refused (remembered {config.replay_window:g} s)")
    else:
        lines.append(
            "[yellow]warning:[/yellow] no auth token: signature validation is OFF "
            "(set PLIVO_AUTH_TOKEN)"
        )
    if config.record_dir:
        lines.append(f"recording into {config.record_dir}")
    if config.upstream:
        from plivo_stream_cli.adapters.tap import shown_url

        signed = " (upgrade signed for it with the auth token)" if config.auth_token else ""
        lines.append(
            f"passing every stream through to your bot at {shown_url(config.upstream)}{signed}"
        )
    return lines
