"""The tunnel interface: the stand-in used by tests, and the pyngrok adapter at its boundary."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pyngrok import ngrok
from pyngrok.exception import PyngrokNgrokError, PyngrokNgrokInstallError
from websockets.asyncio.client import connect

from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.tunnel import (
    NgrokSettings,
    NgrokTunnel,
    StaticTunnel,
    explain_ngrok_error,
    go_public,
    public_urls,
)
from plivo_stream_cli.console.runner import public_banner
from plivo_stream_cli.errors import ConfigError, NetworkError
from plivo_stream_cli.events import Start
from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.signature import sign_headers
from tests.conftest import run

TOKEN = "tunnel-test-token"


def test_signatures_validate_against_the_stand_in_tunnels_public_url() -> None:
    tunnel = StaticTunnel("https://fake-123.ngrok.app")

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN)) as server:
            server.subscribe(records.append, media=False)
            urls = await go_public(server, tunnel)
            assert tunnel.opened_port == server.port
            assert urls["stream"] == "wss://fake-123.ngrok.app/stream"
            assert "wss://fake-123.ngrok.app/stream</Stream>" in urls["xml"]
            assert any("wss://fake-123.ngrok.app/stream" in line for line in public_banner(urls))
            # Plivo signs the public URL; the tunnel delivers the upgrade to localhost.
            public = sign_headers("wss://fake-123.ngrok.app/stream", TOKEN)
            async with connect(server.local_url, additional_headers=public) as ws:
                await ws.send(Start("c", "s", "MA", ("inbound",), MULAW_8K).to_json())
                await _until_stream(server)
            # Signed for the local URL instead: refused, since Plivo could never send that.
            local = sign_headers(server.local_url, TOKEN)
            async with connect(server.local_url, additional_headers=local) as ws:
                await asyncio.wait_for(ws.wait_closed(), 5)
                assert ws.close_code == 1008
        kinds = [r["event"] for r in records]
        assert kinds.count("rejected") == 1 and "start" in kinds

    run(scenario())


async def _until_stream(server: StreamServer) -> None:
    for _ in range(500):
        if "s" in server.streams:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("stream never started")


def test_public_urls() -> None:
    assert public_urls("https://abc.ngrok.app", "/stream") == {
        "stream": "wss://abc.ngrok.app/stream",
        "answer": "https://abc.ngrok.app/answer",
        "status": "https://abc.ngrok.app/status",
    }


class FakeTunnel:
    public_url = "https://abc.ngrok-free.app"


def test_ngrok_adapter_calls_pyngrok_with_port_token_domain_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-before")  # restored after the test

    def fake_connect(addr: str, proto: str, pyngrok_config: Any = None, **options: Any) -> Any:
        calls.update(addr=addr, proto=proto, config=pyngrok_config, options=options)
        return FakeTunnel()

    monkeypatch.setattr(ngrok, "connect", fake_connect)
    monkeypatch.setattr(
        ngrok, "disconnect", lambda url, pyngrok_config=None: calls.update(gone=url)
    )
    monkeypatch.setattr(ngrok, "kill", lambda pyngrok_config=None: calls.update(killed=True))
    tunnel = NgrokTunnel(
        NgrokSettings(authtoken="ngrok-secret", domain="me.ngrok.app", region="eu")
    )
    assert tunnel.open(8080) == "https://abc.ngrok-free.app"
    assert calls["addr"] == "8080" and calls["proto"] == "http"
    assert calls["options"] == {"url": "https://me.ngrok.app"}
    # the token reaches ngrok through its environment, never its (public) command line
    assert calls["config"].auth_token is None and calls["config"].region == "eu"
    assert os.environ["NGROK_AUTHTOKEN"] == "ngrok-secret"
    tunnel.close()
    assert calls["gone"] == "https://abc.ngrok-free.app" and calls["killed"]
    tunnel.close()  # idempotent


def test_ngrok_bad_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PyngrokNgrokError(
            "ngrok failed", ngrok_error="authentication failed: ERR_NGROK_105 bad token"
        )

    monkeypatch.setattr(ngrok, "connect", refuse)
    with pytest.raises(ConfigError, match="NGROK_AUTHTOKEN") as info:
        NgrokTunnel(NgrokSettings(authtoken="secret-token-value")).open(1)
    assert "secret-token-value" not in str(info.value)


def test_ngrok_missing_binary_is_a_network_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_binary(*args: Any, **kwargs: Any) -> Any:
        raise PyngrokNgrokInstallError("download failed")

    monkeypatch.setattr(ngrok, "connect", no_binary)
    with pytest.raises(NetworkError, match="could not be downloaded"):
        NgrokTunnel(NgrokSettings()).open(1)


def test_ngrok_session_limit_is_explained() -> None:
    error = explain_ngrok_error(PyngrokNgrokError("x", ngrok_error="ERR_NGROK_108 limited"))
    assert isinstance(error, NetworkError) and "one agent session" in error.message


def test_serve_cli_ngrok_failure_is_one_line_exit_6(tmp_path: Path) -> None:
    from tests.conftest import pstream_process

    # No ngrok binary and no internet here: the real pyngrok path must fail cleanly.
    env = {"PYNGROK_NGROK_PATH": str(tmp_path / "no-ngrok"), "HOME": str(tmp_path)}
    proc = pstream_process("serve", "--port", "0", "--ngrok", env=env)
    out, err = proc.communicate(timeout=120)
    assert out == ""  # pyngrok's download chatter must not reach stdout
    assert proc.returncode in (3, 6), err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
