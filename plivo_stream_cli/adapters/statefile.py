"""Per-user state on disk: one file per running `pstream serve`, and other small saved values.

I/O. The directory is `$PSTREAM_STATE_DIR`, else `$XDG_STATE_HOME/pstream`, else
`~/.local/state/pstream`, created with mode 0700. Every file is JSON written atomically with mode
0600, because a serve's file holds the token of its control channel. `read`/`write`/`remove` are
the generic store (a later command can keep e.g. an Application's original answer_url here);
`register_serve`/`live_serves` are the serve registry that `tail`, `play`, `clear`, ... use to find
a running serve. Files whose process is gone are skipped (and tidied up) by readers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plivo_stream_cli.errors import ConfigError

STATE_DIR_ENV = "PSTREAM_STATE_DIR"
SERVE_PREFIX = "serve-"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def state_dir() -> Path:
    """Where pstream keeps per-user state (not created by this call)."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "pstream"


def ensure_state_dir() -> Path:
    """The state directory, created (or tightened) to mode 0700."""
    directory = state_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
        if os.name == "posix" and info.st_uid == os.getuid() and info.st_mode & 0o077:
            directory.chmod(0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot use the state directory {directory}: {exc.strerror or exc}; "
            f"set {STATE_DIR_ENV} to a writable directory"
        ) from None
    return directory


def _path(name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad state name {name!r}")
    return state_dir() / f"{name}.json"


def write(name: str, data: Mapping[str, Any]) -> Path:
    """Save `data` as JSON under `name`, atomically, readable only by this user (0600)."""
    path = ensure_state_dir() / _path(name).name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(dict(data), indent=2, sort_keys=True) + "\n"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # never write through a planted symlink


def read(name: str) -> dict[str, Any] | None:
    """The JSON saved under `name`; None when absent, unreadable, not ours or not JSON."""
    return _load(_path(name))


def remove(name: str) -> None:
    """Forget `name` (no error when it is already gone)."""
    with contextlib.suppress(OSError):
        _path(name).unlink()


def _load(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as handle:
            if os.name == "posix" and os.fstat(handle.fileno()).st_uid != os.getuid():
                return None  # someone else's file: never trust a token from it
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ServeEntry:
    """What a running serve publishes about itself."""

    name: str
    pid: int
    control_url: str
    token: str
    local_url: str
    public_url: str | None
    started: float

    def describe(self) -> str:
        """One line for listings (never the token)."""
        public = f"  public {self.public_url}" if self.public_url else ""
        return f"pid {self.pid}  {self.local_url}  control {self.control_url}{public}"


def register_serve(
    *, control_url: str, token: str, local_url: str, public_url: str | None = None
) -> ServeEntry:
    """Publish this process's serve; the name includes the control port so several can coexist."""
    port = control_url.rsplit(":", 1)[-1].split("/", 1)[0]
    entry = ServeEntry(
        name=f"{SERVE_PREFIX}{os.getpid()}-{port}",
        pid=os.getpid(),
        control_url=control_url,
        token=token,
        local_url=local_url,
        public_url=public_url,
        started=round(time.time(), 3),
    )
    write(entry.name, _entry_data(entry))
    return entry


def _entry_data(entry: ServeEntry) -> dict[str, Any]:
    return {
        "kind": "serve",
        "pid": entry.pid,
        "control_url": entry.control_url,
        "token": entry.token,
        "local_url": entry.local_url,
        "public_url": entry.public_url,
        "started": entry.started,
    }


def live_serves() -> list[ServeEntry]:
    """The serves whose process is alive, oldest first; stale files are removed."""
    directory = state_dir()
    if not directory.is_dir():
        return []
    entries = []
    for path in sorted(directory.glob(f"{SERVE_PREFIX}*.json")):
        entry = _parse_entry(path.stem, _load(path))
        if entry is None:
            continue
        if not pid_alive(entry.pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        entries.append(entry)
    return sorted(entries, key=lambda e: e.started)


def _parse_entry(name: str, data: dict[str, Any] | None) -> ServeEntry | None:
    if not data or data.get("kind") != "serve":
        return None
    try:
        public = data.get("public_url")
        return ServeEntry(
            name=name,
            pid=int(data["pid"]),
            control_url=str(data["control_url"]),
            token=str(data["token"]),
            local_url=str(data.get("local_url", "")),
            public_url=str(public) if public else None,
            started=float(data.get("started", 0.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 probes without sending anything)."""
    if pid <= 0:
        return False
    if os.name != "posix":
        return True  # os.kill would terminate it on Windows; a dead serve then fails to connect
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True
