"""`serve --app`: the Application is rewired to serve and put back, against the loopback stand-in.

Serves run as real child processes (signals are real), with PLIVO_API_URL pointing at the stand-in
and PSTREAM_STATE_DIR at the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply
from typer.testing import CliRunner

from plivo_stream_cli.cli import app
from plivo_stream_cli.console import application
from tests.conftest import ROOT

APP = "20372631212782780"
APP_PATH = f"/v1/Account/{AUTH_ID}/Application/{APP}/"
ORIGINAL = {"answer_url": "https://bot.example.com/answer", "answer_method": "GET"}
APP_OBJECT = {"app_id": APP, "app_name": "Wonder", "hangup_url": "https://h.example/", **ORIGINAL}
CHANGED = Reply(202, {"api_id": "a1", "message": "changed"})
PUBLIC = "https://x.example"
runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_URL", "NGROK_AUTHTOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PSTREAM_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def api() -> Iterator[PlivoStandIn]:
    with PlivoStandIn() as server:
        server.route("GET", APP_PATH, Reply(200, APP_OBJECT))
        server.route("POST", APP_PATH, CHANGED)
        yield server


def env_for(api: PlivoStandIn) -> dict[str, str]:
    return {
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
        "PLIVO_API_URL": api.url,
        "PSTREAM_STATE_DIR": os.environ["PSTREAM_STATE_DIR"],
    }


def serve(api: PlivoStandIn, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "plivo_stream_cli", "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", **env_for(api)},
    )  # fmt: skip


def wait_until(
    check: Callable[[], object], proc: subprocess.Popen[str], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"serve exited {proc.returncode} early: {err}")
        if time.monotonic() > deadline:
            raise TimeoutError("serve did not get there in time")
        time.sleep(0.02)


def posts(api: PlivoStandIn) -> list[object]:
    return [r.json for r in api.requests_to("POST", APP_PATH)]


def serving(proc: subprocess.Popen[str]) -> Callable[[], bool]:
    """Whether `proc` has published itself (after --app's change, before it waits for signals)."""
    return lambda: any(_pid_in(path) == proc.pid for path in state_dir().glob("serve-*.json"))


def _pid_in(path: Path) -> object:
    try:  # a dead serve's file may be tidied away while we look
        return json.loads(path.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def state_dir() -> Path:
    return Path(os.environ["PSTREAM_STATE_DIR"])


def crashed_serve(api: PlivoStandIn) -> None:
    """A serve that rewired APP and was SIGKILLed: the saved original stays behind."""
    proc = serve(api, "--app", APP, "--public-url", PUBLIC)
    wait_until(serving(proc), proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert (state_dir() / f"app-{APP}.json").exists()
    api.requests.clear()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_app_points_at_serve_and_is_restored_on_exit(
    api: PlivoStandIn, sig: signal.Signals, code: int
) -> None:
    proc = serve(api, "--app", APP, "--public-url", PUBLIC)
    wait_until(serving(proc), proc)
    assert [r.method for r in api.requests] == ["GET", "POST"]
    assert posts(api) == [{"answer_url": f"{PUBLIC}/answer", "answer_method": "POST"}]
    saved_file = state_dir() / f"app-{APP}.json"
    assert stat.S_IMODE(saved_file.stat().st_mode) == 0o600
    saved = json.loads(saved_file.read_text())
    assert saved["answer_url"] == ORIGINAL["answer_url"] and saved["pid"] == proc.pid

    returncode, out, err = stop(proc, sig)
    assert returncode == code, err
    assert posts(api)[1] == ORIGINAL
    assert not saved_file.exists()
    assert (
        f"application {APP} (Wonder): answer_url https://bot.example.com/answer (GET) -> "
        f"{PUBLIC}/answer (POST); put back when serve exits" in err
    )
    assert f"application {APP}: answer_url restored to https://bot.example.com/answer (GET)" in err
    assert AUTH_TOKEN not in out + err


def test_keep_app_leaves_it_and_says_what_it_was(
    api: PlivoStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    rewire = application.AppRewire(
        application.Connection(AUTH_ID, AUTH_TOKEN, api.url), APP, keep=True
    )
    rewire.claim()
    rewire.apply(PUBLIC)
    rewire.restore()
    assert len(posts(api)) == 1
    assert not (state_dir() / f"app-{APP}.json").exists()
    err = " ".join(capsys.readouterr().err.split())
    assert "left so after exit (--keep-app)" in err
    assert "(--keep-app); it was https://bot.example.com/answer (GET)" in err


def test_after_a_crash_the_same_app_gets_its_true_original_back(api: PlivoStandIn) -> None:
    crashed_serve(api)
    dead = {**APP_OBJECT, "answer_url": f"{PUBLIC}/answer", "answer_method": "POST"}
    api.route("GET", APP_PATH, Reply(200, dead))
    proc = serve(api, "--app", APP, "--public-url", "https://y.example")
    wait_until(serving(proc), proc)
    returncode, _, err = stop(proc, signal.SIGTERM)
    assert returncode == 0, err
    assert posts(api) == [
        {"answer_url": "https://y.example/answer", "answer_method": "POST"},
        ORIGINAL,
    ]
    assert "which died: its original https://bot.example.com/answer (GET)" in err


def test_a_piped_serve_says_how_to_restore_what_a_dead_serve_left(api: PlivoStandIn) -> None:
    dead = application.Saved(APP, ORIGINAL["answer_url"], "GET", f"{PUBLIC}/answer", _dead_pid())
    dead.save()
    proc = serve(api)
    wait_until(serving(proc), proc)
    returncode, _, err = stop(proc, signal.SIGTERM)
    assert returncode == 0
    assert api.requests == []
    assert f"application {APP} still points at {PUBLIC}/answer" in err
    assert f"restore it with `pstream serve --app {APP} --restore-app`" in " ".join(err.split())

    result = runner.invoke(app, ["serve", "--app", APP, "--restore-app"], env=env_for(api))
    assert result.exit_code == 0, result.output
    assert posts(api) == [ORIGINAL]
    assert not (state_dir() / f"app-{APP}.json").exists()
    again = runner.invoke(app, ["serve", "--restore-app"], env=env_for(api))
    assert again.exit_code == 0 and "nothing to restore" in again.stderr


def test_after_a_crash_a_serve_on_a_terminal_asks_and_restores(api: PlivoStandIn) -> None:
    crashed_serve(api)
    master, slave = pty.openpty()
    try:
        os.write(master, b"y\n")  # typed ahead: the prompt reads it
        proc = serve(api, stdin=slave)
        wait_until(serving(proc), proc)
        returncode, _, err = stop(proc, signal.SIGTERM)
    finally:
        os.close(slave)
        os.close(master)
    assert returncode == 0, err
    assert "Restore it now?" in err
    assert posts(api) == [ORIGINAL]
    assert f"answer_url restored to {ORIGINAL['answer_url']} (GET)" in err


def test_app_needs_a_public_url(api: PlivoStandIn) -> None:
    result = runner.invoke(app, ["serve", "--app", APP], env=env_for(api))
    assert result.exit_code == 2
    assert "--ngrok or --public-url" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize("bad", ["../x", "a b", ""])
def test_bad_app_id_is_a_usage_error(api: PlivoStandIn, bad: str) -> None:
    result = runner.invoke(app, ["serve", "--app", bad, "--public-url", PUBLIC], env=env_for(api))
    assert result.exit_code == 2
    assert api.requests == []


def test_app_without_credentials_exits_3_before_serving(api: PlivoStandIn) -> None:
    env = {"PLIVO_API_URL": api.url, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    result = runner.invoke(app, ["serve", "--app", APP, "--public-url", PUBLIC], env=env)
    assert result.exit_code == 3
    assert "PLIVO_AUTH_ID" in result.stderr
    assert "listening" not in result.stderr


def test_unknown_app_exits_4_and_saves_nothing(api: PlivoStandIn) -> None:
    api.route("GET", APP_PATH, Reply(404, {"api_id": "x", "error": "not found"}))
    result = runner.invoke(
        app, ["serve", "--app", APP, "--public-url", PUBLIC, "--port", "0"], env=env_for(api)
    )
    assert result.exit_code == 4, result.output
    assert "no such application (404)" in result.stderr
    assert posts(api) == []
    assert not list(state_dir().glob("app-*"))
    assert AUTH_TOKEN not in result.output


def test_a_refused_update_forgets_the_save(api: PlivoStandIn) -> None:
    api.route("POST", APP_PATH, Reply(400, {"error": "invalid answer_url"}))
    result = runner.invoke(
        app, ["serve", "--app", APP, "--public-url", PUBLIC, "--port", "0"], env=env_for(api)
    )
    assert result.exit_code == 4
    assert "invalid answer_url" in result.stderr
    assert not list(state_dir().glob("app-*"))


def test_an_app_held_by_a_running_serve_is_refused(api: PlivoStandIn) -> None:
    held = application.Saved(
        APP, "https://a.example/", "GET", "https://z.example/answer", os.getppid()
    )
    held.save()
    result = runner.invoke(app, ["serve", "--app", APP, "--public-url", PUBLIC], env=env_for(api))
    assert result.exit_code == 2
    assert "still running" in result.stderr
    restore = runner.invoke(app, ["serve", "--app", APP, "--restore-app"], env=env_for(api))
    assert restore.exit_code == 2
    assert api.requests == []


def test_a_failed_restore_keeps_the_save_and_says_how_to_retry(
    api: PlivoStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = application.Connection(AUTH_ID, AUTH_TOKEN, api.url)
    rewire = application.AppRewire(connection, APP)
    rewire.claim()
    rewire.apply(PUBLIC)
    api.route("POST", APP_PATH, Reply(401, {"error": "Authentication failed"}))
    rewire.restore()  # must not raise: serve is on its way out
    saved = application.load(APP)
    assert saved is not None and saved.answer_url == ORIGINAL["answer_url"]
    err = " ".join(capsys.readouterr().err.split())
    assert "could not restore application" in err and "Authentication failed" in err
    assert f"run `pstream serve --app {APP} --restore-app`" in err


def test_offer_restores_asks_once_per_dead_serve(api: PlivoStandIn) -> None:
    dead_pid = _dead_pid()
    application.Saved(
        APP, ORIGINAL["answer_url"], "GET", "https://d.example/answer", dead_pid
    ).save()
    connection = application.Connection(AUTH_ID, AUTH_TOKEN, api.url)
    questions: list[str] = []
    application.offer_restores(connection, lambda q: questions.append(q) or False, skip=None)
    assert len(questions) == 1 and "https://d.example/answer" in questions[0]
    assert api.requests == [] and application.load(APP) is not None
    application.offer_restores(connection, lambda q: True, skip=None)
    assert posts(api) == [ORIGINAL] and application.load(APP) is None
    connection.close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
