"""The conventions every command shares: help with an example, data on stdout and the rest on
stderr, -q/-v, NO_COLOR and terminals, the exit-code table, and a start-up free of heavy imports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from conftest import ROOT, free_port
from plivo_standin import AUTH_ID, AUTH_TOKEN, PlivoStandIn, Reply
from test_completions import MARKUP
from typer.testing import CliRunner, Result

from plivo_stream_cli import errors
from plivo_stream_cli.cli import app
from plivo_stream_cli.commands.common import add
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import EXIT_CODE_MEANINGS, ExitCode

TOKEN = "conventions-token"
CALL = "4f045f7a-b04a-4364-8523-74e6072f4f72"
HEAVY = ("plivo", "pyngrok", "httpx", "websockets")
SLOW = ("pydantic", "rich")  # not forbidden, but each would blow the start-up budget
ESCAPE = re.compile(rb"\x1b")


def pstream(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={"PLIVO_AUTH_TOKEN": TOKEN, **(env or {})})


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The root command, every command and every sub-command, with the words that reach it."""
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = command.make_context("pstream", [], resilient_parsing=True)
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


ALL_COMMANDS = list(walk(typer.main.get_command(app)))


# ---------------------------------------------------------------- help


def test_the_walk_sees_every_command() -> None:
    names = {" ".join(path) for path, _ in ALL_COMMANDS}
    assert {"", "xml", "serve", "signature", "signature sign", "signature check"} <= names
    assert {"completion", "demo", "replay", "call", "tail", "streams"} <= names
    assert len(names) >= 18


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_help_exits_0_and_shows_an_example_of_the_command(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: pstream {' '.join(path)}".rstrip())
    examples = [p for p in result.stdout.split("\n\n") if p.strip().startswith("Example:")]
    assert examples, f"`pstream {' '.join(path)} --help` shows no Example:"
    assert any(f"pstream {' '.join(path)}" in e for e in examples), examples
    assert "--install-completion" not in result.stdout  # `pstream completion SHELL` instead


def test_examples_are_printed_unwrapped_so_they_can_be_copied() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"], terminal_width=60)
    line = next(x for x in result.stdout.splitlines() if "Example:" in x)
    assert line.strip().endswith("--repeat 10 --json")


def test_help_text_is_plain_text_without_markup() -> None:
    for path, command in ALL_COMMANDS:
        texts = [command.help, command.epilog, command.short_help]
        texts += [getattr(param, "help", None) for param in command.params]
        for text in filter(None, texts):
            assert not MARKUP.search(text), (path, text)


def test_options_are_grouped_by_panel_in_help() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    sections = re.findall(r"^(\S[^\n]*):$", result.stdout, flags=re.MULTILINE)
    assert sections[:2] == ["Options", "Public URL (ngrok)"]
    assert {"Answer URL (/answer)", "Stream attributes", "Plivo API"} <= set(sections)


# ---------------------------------------------------------------- stdout, stderr, -q, -v


def test_data_on_stdout_status_and_warnings_on_stderr(tmp_path: Path) -> None:
    xml = pstream("xml", "ws://example.com/stream")
    assert xml.exit_code == 0 and xml.stdout.startswith("<?xml")
    assert xml.stderr.startswith("warning: ws:// is unencrypted")
    written = pstream("xml", "wss://example.com/stream", "-o", str(tmp_path / "a.xml"))
    assert written.stdout == "" and written.stderr.startswith("wrote ")
    signed = pstream("signature", "sign", "wss://example.com/stream", "--nonce", "1")
    assert [line.split(":")[0] for line in signed.stdout.splitlines()] == [
        "X-Plivo-Signature-V3",
        "X-Plivo-Signature-V3-Nonce",
    ]
    assert signed.stderr.startswith("signed https://example.com/stream")
    assert pstream("--version").stdout.startswith("pstream ")


def test_errors_are_one_line_on_stderr_with_the_tables_code() -> None:
    bad = pstream("xml", "--bidirectional", "--audio-track", "both", "wss://example.com/stream")
    assert bad.exit_code == ExitCode.USAGE and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    invalid = pstream("signature", "check", "https://e.com/", "--signature", "x", "--nonce", "1")
    assert invalid.exit_code == ExitCode.CHECK_FAILED
    assert invalid.stdout == "invalid\n" and invalid.stderr.startswith("error: ")
    missing = pstream("xml")
    assert missing.exit_code == ExitCode.USAGE and missing.stdout == ""
    assert "Missing argument" in missing.stderr
    no_token = CliRunner().invoke(app, ["signature", "sign", "wss://e.com/"], env={})
    assert no_token.exit_code == ExitCode.CONFIG


def test_quiet_keeps_data_warnings_and_errors_only(tmp_path: Path) -> None:
    written = pstream("-q", "xml", "wss://example.com/stream", "-o", str(tmp_path / "a.xml"))
    assert written.exit_code == 0 and written.stdout == "" and written.stderr == ""
    signed = pstream("-q", "signature", "sign", "wss://example.com/stream")
    assert signed.stderr == "" and signed.stdout.count("X-Plivo-Signature-V3") == 2
    warned = pstream("-q", "xml", "ws://example.com/stream")
    assert warned.stderr.startswith("warning: ") and warned.stdout.startswith("<?xml")
    failed = pstream("-q", "xml", "--stream-timeout", "0", "wss://example.com/stream")
    assert failed.exit_code == ExitCode.USAGE and failed.stderr.startswith("error: ")


def test_verbose_shows_details_that_are_hidden_otherwise() -> None:
    port = free_port()  # nothing listens: a refused connection, retried once
    args = ["get", CALL, "--api-url", f"http://127.0.0.1:{port}", "--retries", "1"]
    args += ["--retry-wait", "0", "--auth-id", "MA0000000000000000XX"]
    plain = pstream(*args)
    detailed = pstream("-v", *args)
    assert plain.exit_code == detailed.exit_code == ExitCode.NETWORK
    assert "retrying" not in plain.stderr
    assert "retrying in 0.00s after ConnectError (attempt 1)" in detailed.stderr
    assert TOKEN not in detailed.stdout + detailed.stderr


# ---------------------------------------------------------------- colour and terminals


def on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, bytes]:
    """Run pstream with a pseudo-terminal as stdout and stderr; everything it wrote."""
    pty = pytest.importorskip("pty")
    main, child = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    full_env |= {"PLIVO_AUTH_TOKEN": TOKEN, "TERM": "xterm-256color", **env}
    command = [sys.executable, "-m", "plivo_stream_cli", *args]
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=child, stderr=child, env=full_env, cwd=ROOT
    ) as proc:
        os.close(child)
        shown = b""
        while chunk := _read(main):
            shown += chunk
        code = proc.wait(timeout=60)
    os.close(main)
    return code, shown


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return b""


TERMINAL_RUNS = [
    (("--help",), ExitCode.OK),
    (("xml", "ws://example.com/stream"), ExitCode.OK),
    (("xml",), ExitCode.USAGE),
    (("xml", "--bidirectional", "--audio-track", "both", "wss://e.com/s"), ExitCode.USAGE),
    (("signature", "sign", "wss://e.com/s", "--auth-token", "t"), ExitCode.OK),
    (
        ("signature", "check", "https://e.com/", "--signature", "x", "--nonce", "1"),
        ExitCode.CHECK_FAILED,
    ),
    (("streams",), ExitCode.CONFIG),
]


@pytest.mark.parametrize(
    ("args", "code"), TERMINAL_RUNS, ids=[" ".join(a) for a, _ in TERMINAL_RUNS]
)
def test_no_color_means_no_escape_codes_on_a_terminal(args: tuple[str, ...], code: int) -> None:
    exit_code, shown = on_a_terminal(*args, env={"NO_COLOR": "1"})
    assert exit_code == code, shown
    assert shown.strip() and not ESCAPE.search(shown), shown


def test_without_no_color_the_terminal_does_get_colour() -> None:
    """The check above means something: the same run on the same terminal is coloured."""
    exit_code, shown = on_a_terminal(*TERMINAL_RUNS[3][0], env={})
    assert exit_code == ExitCode.USAGE
    assert ESCAPE.search(shown) and b"error:" in shown


def test_no_color_wins_over_force_color() -> None:
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "1", "PLIVO_AUTH_TOKEN": TOKEN}
    for args, _ in TERMINAL_RUNS[1:]:
        command = [sys.executable, "-m", "plivo_stream_cli", *args]
        done = subprocess.run(command, capture_output=True, env=env, timeout=60, check=False)
        assert not ESCAPE.search(done.stdout + done.stderr), args


def test_a_table_has_no_escape_codes_with_no_color_on_a_terminal_or_forced() -> None:
    stream = {"stream_id": "st-1", "call_uuid": CALL, "service_url": "wss://e.com/s"}
    with PlivoStandIn() as api:
        path = f"/v1/Account/{AUTH_ID}/Call/{CALL}/Stream/"
        api.route("GET", path, Reply(200, {"meta": {"count": 1}, "objects": [stream]}))
        env = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": AUTH_TOKEN, "PLIVO_API_URL": api.url}
        code, shown = on_a_terminal("get", CALL, env={**env, "NO_COLOR": "1"})
        assert code == 0 and b"st-1" in shown and not ESCAPE.search(shown), shown
        forced = {**os.environ, **env, "NO_COLOR": "1", "FORCE_COLOR": "1"}
        command = [sys.executable, "-m", "plivo_stream_cli", "get", CALL]
        piped = subprocess.run(command, capture_output=True, env=forced, timeout=60, check=False)
        assert piped.returncode == 0 and b"st-1" in piped.stdout
        assert not ESCAPE.search(piped.stdout + piped.stderr)


def test_piped_output_has_no_escape_codes_even_without_no_color() -> None:
    for args, _ in TERMINAL_RUNS:
        result = CliRunner().invoke(app, list(args), env={"PLIVO_AUTH_TOKEN": TOKEN})
        assert "\x1b" not in result.stdout + result.stderr, args


def test_a_dumb_terminal_gets_no_live_widgets(monkeypatch: pytest.MonkeyPatch) -> None:
    pty = pytest.importorskip("pty")
    main, child = pty.openpty()
    with os.fdopen(child, "w") as terminal:
        monkeypatch.setattr(sys, "stdout", terminal)
        monkeypatch.setenv("TERM", "xterm")
        assert output.is_terminal()
        monkeypatch.setenv("TERM", "dumb")
        assert not output.is_terminal()
    os.close(main)


# ---------------------------------------------------------------- exit codes


def test_readme_exit_code_table_matches_errors_py() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE)
    assert {int(code): meaning for code, meaning in rows} == {
        int(code): meaning for code, meaning in EXIT_CODE_MEANINGS.items()
    }
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)


def test_every_error_type_exits_with_a_code_from_the_table() -> None:
    kinds = [k for k in vars(errors).values() if isinstance(k, type)]
    kinds = [k for k in kinds if issubclass(k, errors.PstreamError)]
    assert len(kinds) >= 8
    for kind in kinds:
        assert kind.exit_code in EXIT_CODE_MEANINGS, kind


def test_ctrl_c_at_a_prompt_exits_130_like_anywhere_else() -> None:
    """click turns Ctrl-C (or end of input) at a prompt into Abort, which would exit 1."""
    demo = typer.Typer()

    def ask() -> None:
        typer.prompt("stream", err=True)

    add(demo, ask, "ask")
    add(demo, ask, "again")  # two commands: a group, as in pstream
    result = CliRunner().invoke(demo, ["ask"], input="")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert "interrupted" in result.stderr and "Aborted" not in result.output


# ---------------------------------------------------------------- start-up

PROBE = """
import atexit, json, sys
REPORT = sys.argv[1]
def report():
    with open(REPORT, "w") as f:
        json.dump(sorted({m.partition(".")[0] for m in sys.modules}), f)
atexit.register(report)
if sys.argv[2:] == ["--import-only"]:
    import plivo_stream_cli.cli
else:
    sys.argv = ["pstream", *sys.argv[2:]]
    from plivo_stream_cli.cli import main
    main()
"""

PROBES = {
    "import": (["--import-only"], {}),
    "--help": (["--help"], {}),
    "xml --help": (["xml", "--help"], {}),
    "serve --help": (["serve", "--help"], {}),
    "zsh TAB": ([], {"_PSTREAM_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "pstream "}),
    "bash TAB": (
        [],
        {
            "_PSTREAM_COMPLETE": "complete_bash",
            "COMP_WORDS": "pstream serve --content-type ",
            "COMP_CWORD": "3",
        },
    ),
    "fish TAB": (
        [],
        {
            "_PSTREAM_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "pstream signature check --",
        },
    ),
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_start_up_imports_no_heavy_module(probe: str, tmp_path: Path) -> None:
    args, env = PROBES[probe]
    report = tmp_path / "modules.json"
    command = [sys.executable, "-c", PROBE, str(report), *args]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() or probe == "import"
    imported = set(json.loads(report.read_text()))
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert not imported & set(SLOW), imported & set(SLOW)


def test_a_command_that_runs_imports_no_pydantic() -> None:
    """Values are converted by pstream's rules (commands.base.plain_values): `pstream xml`
    stays within 2x of `--help` (issue 22.12) with any Typer, pydantic-backed or not."""
    code = (
        "import sys\n"
        "sys.argv = ['pstream', 'xml', '--content-type', 'audio/x-l16;rate=16000',"
        " '--extra-header', 'a=1', '--stream-timeout', '30', '-o', sys.argv[1],"
        " 'wss://example.com/stream']\n"
        "from plivo_stream_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('pydantic', 'plivo', 'rich', 'httpx', 'websockets')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.devnull],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.strip().replace("'", '"'))
    assert not [m for m in imported if m.split(".")[0] in ("pydantic", "plivo", "httpx")]
