"""Every number and URL a flag takes, checked while the command line is parsed.

Each `*_option` helper builds a `typer.Option` whose parser turns the text into a value or raises
`typer.BadParameter` saying what the flag accepts (finite, in range); the usage error then names
the flag (see `commands.base.one_line`). Used by every command, so `--linger 1e400`, `--speed nan`
or `-p 70000` never reach the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import typer

NUMBER_METAVARS = ("SECONDS", "N", "MS", "PORT", "FACTOR")
DAY = 86_400.0  # the longest a stream lasts (Plivo's streamTimeout default)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _bounds(low: float, high: float, integer: bool) -> str:
    def show(x: float) -> str:
        return str(int(x)) if integer else f"{x:g}"

    return f"from {show(low)} to {show(high)}"


def number_parser(
    what: str,
    low: float,
    high: float,
    *,
    integer: bool = False,
    above_low: bool = False,
) -> Callable[[Any], Any]:
    """A parser for a finite number in [low, high] (or (low, high] with `above_low`)."""
    kind = "a whole number" if integer else "a number"
    accepts = f"{kind} of {what} {_bounds(low, high, integer)}"
    if above_low:
        accepts = f"{kind} of {what} above {low:g} and up to {high:g}"
    if what == "port":
        accepts = f"a port number {_bounds(low, high, True)}"

    def parse(value: Any) -> Any:
        if value is None:
            return None
        try:
            number: float = int(value) if integer else float(value)
        except (TypeError, ValueError, OverflowError):
            raise typer.BadParameter(f"accepts {accepts} (got {_text(value)})") from None
        if isinstance(value, str) and integer and not value.strip().lstrip("+-").isdigit():
            raise typer.BadParameter(f"accepts {accepts} (got {_text(value)})")
        finite = math.isfinite(number)
        inside = low < number <= high if above_low else low <= number <= high
        if not (finite and inside):
            raise typer.BadParameter(f"accepts {accepts} (got {_text(value)})")
        return number

    parse.__name__ = "integer" if integer else "number"
    return parse


def number_option(
    default: Any,
    *decls: str,
    what: str,
    low: float,
    high: float,
    integer: bool = False,
    above_low: bool = False,
    metavar: str = "N",
    **kwargs: Any,
) -> Any:
    """A `typer.Option` taking a finite number in range (see `number_parser`)."""
    return typer.Option(
        default,
        *decls,
        parser=number_parser(what, low, high, integer=integer, above_low=above_low),
        metavar=metavar,
        **kwargs,
    )


def seconds_option(default: Any, *decls: str, low: float = 0.0, **kwargs: Any) -> Any:
    """Seconds from `low` (default 0) to a day."""
    return number_option(default, *decls, what="seconds", low=low, high=DAY, metavar="SECONDS",
                         **kwargs)  # fmt: skip


def speed_option(default: float, *decls: str, **kwargs: Any) -> Any:
    """A speed-up factor: more than 0, at most 1000."""
    return number_option(default, *decls, what="times real time", low=0.0, high=1000.0,
                         above_low=True, metavar="FACTOR", **kwargs)  # fmt: skip


def port_parser(*, allow_zero: bool = True) -> Callable[[Any], Any]:
    return number_parser("port", 0 if allow_zero else 1, 65535, integer=True)


def port_option(default: Any, *decls: str, **kwargs: Any) -> Any:
    """A TCP port, 0 (pick one) to 65535."""
    return typer.Option(default, *decls, parser=port_parser(), metavar="PORT", **kwargs)


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """What is wrong with `value` as a URL with one of `schemes`, or None when it is fine."""
    listed = " or ".join(f"{s}://" for s in schemes)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError when out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        return f"{value!r} is not a valid URL ({exc})"
    if not schemes:
        return None  # only the form is checked here; the caller says which schemes it takes
    if parts.scheme.lower() not in schemes:
        return f"accepts a {listed} URL (got {value!r})"
    if not host:
        return f"{value!r} has no host"
    if port == 0:
        return f"{value!r} has port 0, which nothing listens on"
    return None


def check_url(value: str, schemes: tuple[str, ...], *, flag: str) -> str:
    """`value` when it is a well-formed URL with one of `schemes`; else a one-line UsageError."""
    from plivo_stream_cli.errors import UsageError

    problem = url_problem(value, schemes)
    if problem is not None:
        raise UsageError(f"{flag}: {problem}")
    return value


def url_parser(schemes: tuple[str, ...]) -> Callable[[Any], Any]:
    """A parser for a URL with one of `schemes` (the flag's name is added by the usage error)."""

    def parse(value: Any) -> Any:
        if value is None:
            return None
        problem = url_problem(str(value), schemes)
        if problem is not None:
            raise typer.BadParameter(problem)
        return str(value)

    parse.__name__ = "url"
    return parse


WS_SCHEMES = ("ws", "wss")
HTTP_SCHEMES = ("http", "https")
ANY_SCHEME: tuple[str, ...] = ()
PUBLIC_SCHEMES = ("http", "https", "ws", "wss")


def ms_option(default: Any, *decls: str, **kwargs: Any) -> Any:
    """Milliseconds from 0 to a day."""
    return number_option(default, *decls, what="milliseconds", low=0.0, high=DAY * 1000,
                         metavar="MS", **kwargs)  # fmt: skip


def count_option(
    default: Any, *decls: str, what: str, high: int, low: int = 1, **kwargs: Any
) -> Any:
    """A whole number of `what` (calls, processes, ...) from `low` (default 1) to `high`."""
    return number_option(
        default, *decls, what=what, low=low, high=high, integer=True, metavar="N", **kwargs
    )


def check_dtmf(schedule: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """A --dtmf schedule whose times are finite and within a day (`5@1e300` would never end)."""
    from plivo_stream_cli.errors import UsageError

    for digit, seconds in schedule:
        if not (math.isfinite(seconds) and 0 <= seconds <= DAY):
            raise UsageError(
                f"--dtmf: {digit}@{seconds:g}: the time must be a number of seconds "
                f"{_bounds(0, DAY, False)}"
            )
    return schedule


def is_loopback(host: str) -> bool:
    """True when `host` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # "" (every interface) or a name that may resolve anywhere


def exposure(host: str, token: str | None) -> str | None:
    """The warning for a serve that listens beyond loopback; refused without an auth token."""
    from plivo_stream_cli.errors import ConfigError

    if is_loopback(host):
        return None
    where = "every interface" if host.strip() in ("", "0.0.0.0", "::", "[::]") else repr(host)
    if not token:
        raise ConfigError(
            f"--host {host!r} listens on {where} with signature checks off: anyone who can "
            "reach this machine could stream to it. Set PLIVO_AUTH_TOKEN, or listen on "
            "127.0.0.1 behind a tunnel (--ngrok)"
        )
    return (
        f"listening on {where} (--host {host!r}): reachable from other machines; "
        "only requests signed with your auth token are accepted"
    )
