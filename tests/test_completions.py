"""Shell completion: the committed scripts are fresh, `pstream completion SHELL` prints them, and
the TAB protocol (`_PSTREAM_COMPLETE=complete_<shell>`) answers in plain text, run as a shell would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main
from conftest import ROOT
from typer.testing import CliRunner

from plivo_stream_cli.cli import app
from plivo_stream_cli.commands import shellcomplete as completion

COMPLETIONS = ROOT / "completions"
GENERATOR = ROOT / "scripts" / "gen_completions.py"
# A rich tag: [bold], [/bold], [red], [/], [link=...], [bold red] ...
MARKUP = re.compile(
    r"\[/?(?:bold|dim|italic|underline|strike|reverse|blink|link|red|green|yellow"
    r"|blue|magenta|cyan|white|black)\b[^\]]*\]|\[/\]"
)
COMMANDS = (
    "xml", "stop", "get", "start", "serve", "simulate", "tail", "play", "clear", "checkpoint",
    "streams", "replay", "demo", "call", "completion", "signature",
)  # fmt: skip


def tab(shell: str, line: str) -> subprocess.CompletedProcess[str]:
    """Run pstream as the shell's completion script does for the words in `line`."""
    env = {**os.environ, completion.COMPLETE_VAR: f"complete_{shell}"}
    if shell == "bash":
        words = line.split(" ")
        env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    else:
        env["_TYPER_COMPLETE_ARGS"] = line
        if shell == "fish":
            env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    return subprocess.run(
        [sys.executable, "-m", "plivo_stream_cli"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- the committed scripts


def test_committed_scripts_match_the_app() -> None:
    scripts = completion.generate()
    assert sorted(scripts) == ["_pstream", "pstream.bash", "pstream.fish"]
    for name, text in scripts.items():
        committed = (COMPLETIONS / name).read_text("utf-8")
        assert committed == text, f"completions/{name} is stale: python scripts/gen_completions.py"


def test_the_generator_checks_and_rewrites(tmp_path: Path) -> None:
    def generator(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(GENERATOR), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert generator("--check").returncode == 0
    for name in completion.FILE_NAMES.values():
        shutil.copy(COMPLETIONS / name, tmp_path / name)
    (tmp_path / "pstream.fish").write_text("# edited by hand\n")
    stale = generator("--check", "--dir", str(tmp_path))
    assert stale.returncode == 1 and "pstream.fish" in stale.stderr
    assert "_pstream" not in stale.stderr
    assert generator("--dir", str(tmp_path)).returncode == 0
    assert generator("--check", "--dir", str(tmp_path)).returncode == 0
    assert (tmp_path / "pstream.fish").read_text() == (COMPLETIONS / "pstream.fish").read_text()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_command_prints_the_committed_script(shell: str) -> None:
    result = CliRunner().invoke(app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert result.stdout == (COMPLETIONS / completion.FILE_NAMES[shell]).read_text("utf-8")
    assert result.stderr == ""
    assert completion.COMPLETE_VAR in result.stdout and "pstream" in result.stdout


def test_completion_command_needs_a_known_shell() -> None:
    result = CliRunner().invoke(app, ["completion", "powershell"])
    assert result.exit_code == 2 and result.stdout == ""
    missing = CliRunner().invoke(app, ["completion"])
    assert missing.exit_code == 2


def test_typer_install_completion_options_are_gone() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" not in result.stdout
    assert "--show-completion" not in result.stdout


# ---------------------------------------------------------------- the TAB protocol


def test_zsh_offers_every_command_with_its_description() -> None:
    result = tab("zsh", "pstream ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("_arguments '*: :((")
    for name in COMMANDS:
        assert f'"{name}":"' in result.stdout, name
    assert '"serve":"Run a local WebSocket stream server' in result.stdout
    assert not MARKUP.search(result.stdout)


def test_fish_offers_options_with_descriptions() -> None:
    result = tab("fish", "pstream serve --re")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert {"--record", "--restore-app"} <= set(lines)
    assert all(option.startswith("--re") for option in lines)
    assert lines["--record"].startswith("Record each stream")
    assert not MARKUP.search(result.stdout)


def test_bash_completes_a_prefix_choices_and_sub_commands() -> None:
    assert tab("bash", "pstream si").stdout.split() == ["simulate", "signature"]
    choices = tab("bash", "pstream xml --content-type ").stdout.split()
    assert choices == ["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000"]
    assert tab("bash", "pstream signature ").stdout.split() == ["sign", "check"]
    assert tab("bash", "pstream completion ").stdout.split() == ["bash", "zsh", "fish"]


def test_no_markup_in_any_completion_description() -> None:
    """Every command and option description, as zsh and fish would show it."""
    root = typer.main.get_command(app)
    lines = ["pstream ", "pstream -", "pstream signature sign --"]
    lines += [f"pstream {name} --" for name in COMMANDS]
    for line in lines:
        words = line.split(" ")
        items = completion.completions(root, words[1:-1], words[-1])
        assert items, line
        for shell in ("zsh", "fish"):
            shown = completion.FORMATS[shell](items)
            assert not MARKUP.search(shown), (line, MARKUP.search(shown))


def test_completion_needs_no_private_typer_or_click_names() -> None:
    """Only the libraries' public API: any Typer from the lower bound on keeps working."""
    for module in ("commands/shellcomplete.py", "commands/base.py", "cli.py"):
        source = (ROOT / "plivo_stream_cli" / module).read_text("utf-8")
        private = r"typer\._[a-z]|click\._[a-z]|\._[a-z]\w*_param|_protected_args"
        assert not re.search(private, source), module


def test_markup_that_slips_into_help_is_dropped_but_brackets_are_kept() -> None:
    demo = typer.Typer(rich_markup_mode=None)

    @demo.command(help="[bold]Deploy[/bold] the [red]bot[/red] [y/n]. Then more.")
    def deploy() -> None:  # pragma: no cover - only completed, never run
        pass

    @demo.command(help="List things.")
    def things() -> None:  # pragma: no cover
        pass

    command = typer.main.get_command(demo)
    items = completion.completions(command, [], "")
    for shell in ("zsh", "fish"):
        shown = completion.FORMATS[shell](items)
        assert "Deploy the bot" in shown and "[y/n]" in shown, shown
        assert not MARKUP.search(shown)
    assert completion.plain("[bold]x[/bold] [y/n]") == "x [y/n]"
    assert completion.plain("[bold red]a[/] [link=https://e.com]b[/link]") == "a b"
    assert completion.plain("no closing tag: [bold] [y/n]") == "no closing tag: [bold] [y/n]"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_committed_bash_script_completes_in_bash(tmp_path: Path) -> None:
    """Source completions/pstream.bash in a real bash and press TAB after `pstream ser`."""
    launcher = tmp_path / "pstream"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m plivo_stream_cli "$@"\n')
    launcher.chmod(0o755)
    script = (
        f"source {COMPLETIONS / 'pstream.bash'}\n"
        "COMP_WORDS=(pstream ser); COMP_CWORD=1\n"
        '_pstream_completion pstream ser\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
        "complete -p pstream\n"
    )
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "serve",
        "complete -o default -F _pstream_completion pstream",
    ]
