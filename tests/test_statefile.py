"""The per-user state directory: location, file modes, the generic store and the serve registry."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from plivo_stream_cli.adapters import statefile
from plivo_stream_cli.errors import ConfigError


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(directory))
    return directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_location_follows_override_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(statefile.STATE_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert statefile.state_dir() == tmp_path / "home" / ".local" / "state" / "pstream"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec says: ignore
    assert statefile.state_dir() == tmp_path / "home" / ".local" / "state" / "pstream"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert statefile.state_dir() == tmp_path / "xdg" / "pstream"
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(tmp_path / "mine"))
    assert statefile.state_dir() == tmp_path / "mine"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_files_are_0600_in_a_0700_directory_whatever_the_umask(state: Path) -> None:
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    old = os.umask(0)
    try:
        path = statefile.write("app-answer-url", {"answer_url": "https://example.com/a"})
    finally:
        os.umask(old)
    assert path == state / "app-answer-url.json"
    assert mode(path) == 0o600
    assert mode(state) == 0o700
    assert statefile.read("app-answer-url") == {"answer_url": "https://example.com/a"}
    assert [p.name for p in state.iterdir()] == ["app-answer-url.json"]  # no temp file left


def test_generic_store_round_trip_overwrite_and_remove(state: Path) -> None:
    assert statefile.read("nothing") is None
    statefile.write("saved", {"a": 1})
    statefile.write("saved", {"a": 2, "b": [1, 2]})
    assert statefile.read("saved") == {"a": 2, "b": [1, 2]}
    statefile.remove("saved")
    statefile.remove("saved")  # already gone: fine
    assert statefile.read("saved") is None


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 101])
def test_names_cannot_leave_the_directory(state: Path, name: str) -> None:
    with pytest.raises(ValueError):
        statefile.write(name, {})


def test_unreadable_or_foreign_json_reads_as_absent(state: Path) -> None:
    state.mkdir()
    (state / "broken.json").write_text("{not json")
    (state / "list.json").write_text("[1, 2]")
    assert statefile.read("broken") is None
    assert statefile.read("list") is None


def test_unwritable_directory_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(statefile.STATE_DIR_ENV, str(blocker / "state"))
    with pytest.raises(ConfigError, match="PSTREAM_STATE_DIR"):
        statefile.write("x", {})


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_serve_registry_lists_live_serves_and_drops_stale_files(state: Path) -> None:
    first = statefile.register_serve(
        control_url="ws://127.0.0.1:4001/control", token="t1", local_url="ws://127.0.0.1:8080/s"
    )
    second = statefile.register_serve(
        control_url="ws://127.0.0.1:4002/control",
        token="t2",
        local_url="ws://127.0.0.1:8081/s",
        public_url="https://abc.example.app",
    )
    stale = dict(statefile.read(first.name) or {}, pid=dead_pid())
    statefile.write("serve-1-4003", stale)
    statefile.write("serve-junk", {"kind": "serve"})  # incomplete: ignored, kept
    serves = statefile.live_serves()
    assert [s.control_url for s in serves] == [first.control_url, second.control_url]
    assert serves[1].token == "t2" and serves[1].public_url == "https://abc.example.app"
    assert serves[0].pid == os.getpid()
    assert not (state / "serve-1-4003.json").exists()
    assert "t2" not in serves[1].describe() and "4002" in serves[1].describe()
    data = json.loads((state / f"{second.name}.json").read_text())
    assert data["kind"] == "serve" and data["token"] == "t2"


def test_no_state_directory_means_no_serves(state: Path) -> None:
    assert statefile.live_serves() == []
    assert not state.exists()


def test_pid_alive() -> None:
    assert statefile.pid_alive(os.getpid())
    assert not statefile.pid_alive(dead_pid())
    assert not statefile.pid_alive(0)
