"""Public tunnels in front of `serve`: the ngrok adapter (pyngrok) and the interface it fills.

`serve --ngrok` talks to a `Tunnel`; tests inject `StaticTunnel` (a fake public URL mapped to
localhost) so the whole path up to pyngrok runs without ngrok's cloud. `NgrokTunnel` is the real
thing users run: pyngrok is imported only when a tunnel opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from plivo_stream_cli.errors import ConfigError, NetworkError

if TYPE_CHECKING:
    from plivo_stream_cli.adapters.server import StreamServer

# ngrok error codes: https://ngrok.com/docs/errors/
_BAD_TOKEN_CODES = {"ERR_NGROK_105", "ERR_NGROK_106", "ERR_NGROK_107", "ERR_NGROK_4018"}
_SESSION_LIMIT_CODES = {"ERR_NGROK_108"}


class Tunnel(Protocol):
    """Something that makes a local port reachable at a public https URL."""

    def open(self, port: int) -> str:
        """Start forwarding to 127.0.0.1:`port`; return the public https:// base URL."""
        ...

    def close(self) -> None:
        """Stop forwarding (idempotent)."""
        ...


@dataclass
class StaticTunnel:
    """A stand-in: the 'public' URL is given, and traffic is expected to reach the port directly."""

    public_url: str
    opened_port: int | None = None
    closed: bool = False

    def open(self, port: int) -> str:
        self.opened_port = port
        return self.public_url

    def close(self) -> None:
        self.closed = True


@dataclass
class NgrokSettings:
    authtoken: str | None = None
    domain: str | None = None
    region: str | None = None


class NgrokTunnel:
    """An ngrok HTTP tunnel opened with pyngrok."""

    def __init__(
        self, settings: NgrokSettings, on_status: Callable[[str], None] = lambda _: None
    ) -> None:
        self.settings = settings
        self.on_status = on_status
        self.public_url: str | None = None
        self._config: Any = None

    def open(self, port: int) -> str:
        from pyngrok import conf, ngrok
        from pyngrok.exception import PyngrokError

        self._config = conf.PyngrokConfig(region=self.settings.region)
        # pyngrok would put the token on ngrok's command line (`--authtoken`), where `ps` shows
        # it to every user; the ngrok agent reads NGROK_AUTHTOKEN from its environment instead.
        self._config.auth_token = None
        if self.settings.authtoken:
            os.environ["NGROK_AUTHTOKEN"] = self.settings.authtoken
        options: dict[str, Any] = {}
        if self.settings.domain:
            options["url"] = f"https://{_bare_domain(self.settings.domain)}"
        if not os.path.exists(self._config.ngrok_path):
            self.on_status(f"downloading the ngrok agent (first use) to {self._config.ngrok_path}")
        try:
            # pyngrok writes its download progress on stdout (for data) with carriage returns;
            # on stderr it would overwrite pstream's own lines: it goes nowhere.
            with contextlib.redirect_stdout(io.StringIO()):
                tunnel = ngrok.connect(str(port), "http", pyngrok_config=self._config, **options)
        except PyngrokError as exc:
            raise explain_ngrok_error(exc) from None
        public = str(tunnel.public_url)
        self.public_url = "https://" + public.split("://", 1)[-1]
        return self.public_url

    def close(self) -> None:
        if self.public_url is None:
            return
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        try:
            ngrok.disconnect(self.public_url, pyngrok_config=self._config)
            ngrok.kill(pyngrok_config=self._config)
        except PyngrokError:
            pass  # the tunnel is going away with its process either way
        self.public_url = None


def explain_ngrok_error(exc: Exception) -> ConfigError | NetworkError:
    """One line saying why ngrok could not start and what to do (never the token)."""
    name = type(exc).__name__
    code = getattr(exc, "ngrok_error_code", None)
    detail = str(getattr(exc, "ngrok_error", None) or exc).strip().splitlines()
    first = detail[0][:160] if detail else name
    if (
        code in _BAD_TOKEN_CODES
        or "authtoken" in first.lower()
        or "authentication" in first.lower()
    ):
        return ConfigError(
            "ngrok refused the auth token: set NGROK_AUTHTOKEN (or --ngrok-authtoken) to the "
            "token from https://dashboard.ngrok.com/get-started/your-authtoken"
        )
    if code in _SESSION_LIMIT_CODES:
        return NetworkError(
            "ngrok allows one agent session on this account and one is already running: "
            "stop the other ngrok, or use --public-url with your own tunnel"
        )
    if name == "PyngrokNgrokInstallError":
        return NetworkError(
            "the ngrok binary is not installed and could not be downloaded (no internet?): "
            "install ngrok yourself and set PYNGROK_NGROK_PATH, or use --public-url"
        )
    return NetworkError(f"ngrok could not open a tunnel: {first}; or use --public-url")


_AUTHTOKEN_LINE = re.compile(r"^\s*authtoken:\s*['\"]?[^\s'\"#]", re.MULTILINE)


def ngrok_config_files(home: str | None = None, xdg: str | None = None) -> list[str]:
    """Where the ngrok agent (v2 and v3, Linux and macOS) keeps its config with the token."""
    home = home if home is not None else os.path.expanduser("~")
    xdg = xdg if xdg is not None else os.environ.get("XDG_CONFIG_HOME", "")
    places = [os.path.join(xdg, "ngrok", "ngrok.yml")] if xdg else []
    places += [
        os.path.join(home, ".config", "ngrok", "ngrok.yml"),
        os.path.join(home, "Library", "Application Support", "ngrok", "ngrok.yml"),
        os.path.join(home, ".ngrok2", "ngrok.yml"),
    ]
    return places


def configured_authtoken(paths: list[str]) -> bool:
    """True when one of the ngrok config files sets an authtoken (it is never read out)."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                if _AUTHTOKEN_LINE.search(handle.read(65_536)):
                    return True
        except OSError:
            continue
    return False


def check_ngrok_token(token: str | None) -> None:
    """Refuse --ngrok up front when ngrok has no auth token to use (one line saying how)."""
    if token or configured_authtoken(ngrok_config_files()):
        return
    raise ConfigError(
        "--ngrok needs an ngrok auth token: export NGROK_AUTHTOKEN=... (from "
        "https://dashboard.ngrok.com/get-started/your-authtoken) or run `ngrok config "
        "add-authtoken TOKEN` once"
    )


def _bare_domain(domain: str) -> str:
    return urlsplit(domain).netloc if "://" in domain else domain.strip("/")


def public_urls(base: str, path: str) -> dict[str, str]:
    """The URLs to paste into Plivo for a public base URL such as https://abc.ngrok.app."""
    parts = urlsplit(base if "://" in base else f"https://{base}")
    host = parts.netloc
    secure = parts.scheme in ("https", "wss")
    ws_scheme, http_scheme = ("wss", "https") if secure else ("ws", "http")
    return {
        "stream": f"{ws_scheme}://{host}{path}",
        "answer": f"{http_scheme}://{host}/answer",
        "status": f"{http_scheme}://{host}/status",
    }


async def go_public(server: StreamServer, tunnel: Tunnel) -> dict[str, str]:
    """Open `tunnel` to the server's port and check signatures against it.

    Returns the URLs to paste into Plivo (`public_urls`) and the Stream XML, under `xml`.
    """
    base = await asyncio.to_thread(tunnel.open, server.port)
    server.config.public_url = base
    return {**public_urls(base, server.config.path), "xml": server.answer_xml()}
