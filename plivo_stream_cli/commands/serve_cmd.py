"""`pstream serve`: the local stream server (flags only; the engine is `server` and `runner`)."""

from __future__ import annotations

from pathlib import Path

import typer

from plivo_stream_cli.commands.common import add, auth_token_option, resolve_token

SERVE_EPILOG = (
    "Example: PLIVO_AUTH_TOKEN=... pstream serve --record calls/ --play greeting.wav\n\n"
    "Then, in another terminal: pstream simulate ws://127.0.0.1:8080/stream"
)


def register(app: typer.Typer) -> None:
    add(app, serve, "serve", epilog=SERVE_EPILOG)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", "-p", help="Port to listen on (0 picks one)."),
    path: str = typer.Option("/stream", "--path", help="WebSocket path Plivo connects to."),
    auth_token: str | None = auth_token_option(),
    public_url: str | None = typer.Option(
        None,
        "--public-url",
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
        None, "--play", help="Play this audio file to every new stream after its start event."
    ),
    echo: bool = typer.Option(False, "--echo", help="Send the caller's own audio back."),
    max_buffer: float = typer.Option(
        20.0, "--max-buffer", help="Seconds of audio allowed in Plivo's playback queue."
    ),
    start_timeout: float = typer.Option(
        10.0, "--start-timeout", help="Close connections that send no start event in time."
    ),
    json_feed: bool = typer.Option(
        False, "--json", help="One JSON line per event on stdout (payload sizes, not payloads)."
    ),
) -> None:
    """Run a local WebSocket stream server that validates, shows and records Plivo streams."""
    import asyncio

    from plivo_stream_cli import output
    from plivo_stream_cli.runner import ServeUi, run_serve
    from plivo_stream_cli.server import ServeConfig, StreamServer

    token = resolve_token(auth_token, required=False)
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
    )
    if play is not None:
        from plivo_stream_cli.audiofile import load_pcm

        config.play_audio, config.play_rate = load_pcm(play)
        config.play_name = play.stem
    server = StreamServer(config)
    ui = ServeUi(
        json_feed=json_feed,
        live=not json_feed and output.is_terminal(),
        banner=_banner(config),
    )

    async def started(srv: StreamServer) -> None:
        ui.banner.insert(0, f"listening on [bold]{srv.local_url}[/bold]  (GET /healthz)")

    code = asyncio.run(run_serve(server, ui, on_started=started))
    raise typer.Exit(int(code))


def _record_dir(record: Path | None) -> Path | None:
    if record is None:
        return None
    from plivo_stream_cli.server import prepare_record_dir

    return prepare_record_dir(record)


def _banner(config: object) -> list[str]:
    from plivo_stream_cli.server import ServeConfig

    assert isinstance(config, ServeConfig)
    lines = []
    if config.auth_token:
        target = config.public_url or "the Host header's URL"
        lines.append(f"signature V3 checked against {target}")
    else:
        lines.append(
            "[yellow]warning:[/yellow] no auth token: signature validation is OFF "
            "(set PLIVO_AUTH_TOKEN)"
        )
    if config.record_dir:
        lines.append(f"recording into {config.record_dir}")
    return lines
