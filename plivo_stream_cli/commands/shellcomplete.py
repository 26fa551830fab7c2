"""Shell completion for `pstream`: the bash, zsh and fish scripts and the per-TAB protocol.

The scripts are Typer's own, made for prog name `pstream` and variable `_PSTREAM_COMPLETE`; the
copies in `completions/` are written by `scripts/gen_completions.py`. On each TAB the shell runs
`pstream` with `_PSTREAM_COMPLETE=complete_<shell>` and the words typed so far; the classes here
answer it. They differ from Typer's in two ways that matter on every keystroke: they never
import rich (Typer's renders each description through rich to drop markup: ~100 ms), and
`source()` never runs `bash` to probe its version, so the same script comes out everywhere.
"""

from __future__ import annotations

import re
from typing import Any

from typer._completion_classes import BashComplete, FishComplete, ZshComplete

PROG_NAME = "pstream"
COMPLETE_VAR = "_PSTREAM_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
FILE_NAMES = {"bash": "pstream.bash", "zsh": "_pstream", "fish": "pstream.fish"}
_WHITESPACE = re.compile(r"\s")


def plain(text: str) -> str:
    """Help text without rich markup tags; other bracketed text (`[y/n]`) is kept.

    Help is plain text (pstream's help is not rendered by rich), so this is a safety net for a
    tag that slips in. Text without a closing tag (`[/...]`) cannot hold markup: left alone.
    """
    if "[/" not in text:
        return text
    return _TAG.sub(lambda m: "" if _is_style(m.group(2), closing=bool(m.group(1))) else m[0], text)


_TAG = re.compile(r"\[(/?)([^\[\]]*)\]")


def _is_style(name: str, *, closing: bool) -> bool:
    from rich.errors import StyleSyntaxError
    from rich.style import Style

    if (closing and not name) or name.partition("=")[0] == "link":
        return True  # [/] closes the last tag; [link=URL] ... [/link] is a hyperlink
    try:
        Style.parse(name.replace("=", " ", 1))  # [link=URL] is the style "link URL"
    except StyleSyntaxError:
        return False
    return True


def _source(comp: BashComplete | ZshComplete | FishComplete) -> str:
    """The script exactly as the template makes it: no version probe, one final newline."""
    return (comp.source_template % comp.source_vars()).strip() + "\n"


class Bash(BashComplete):
    def source(self) -> str:
        return _source(self)


class Zsh(ZshComplete):
    def source(self) -> str:
        return _source(self)

    def format_completion(self, item: Any) -> str:
        if item.help:
            return f'"{_zsh_escape(item.value)}":"{_zsh_escape(plain(item.help))}"'
        return f'"{_zsh_escape(item.value)}"'


class Fish(FishComplete):
    def source(self) -> str:
        return _source(self)

    def format_completion(self, item: Any) -> str:
        if item.help:
            return f"{item.value}\t{plain(_WHITESPACE.sub(' ', item.help))}"
        return f"{item.value}"


CLASSES: dict[str, type[Bash | Zsh | Fish]] = {"bash": Bash, "zsh": Zsh, "fish": Fish}


def _zsh_escape(text: str) -> str:
    # Typer's quoting for its zsh script's `_arguments` spec.
    return (
        text.replace('"', '""')
        .replace("'", "''")
        .replace("$", "\\$")
        .replace("`", "\\`")
        .replace(":", r"\\:")
    )


def enable() -> None:
    """Answer `_PSTREAM_COMPLETE=complete_<shell>` with these classes (cheap: no I/O)."""
    from typer._click.shell_completion import add_completion_class

    for name, cls in CLASSES.items():
        add_completion_class(cls, name)


def script(shell: str, command: Any) -> str:
    """The completion script for `shell` (bash, zsh or fish) for the click `command`."""
    return CLASSES[shell](command, {}, PROG_NAME, COMPLETE_VAR).source()


def generate(command: Any) -> dict[str, str]:
    """Every script, by its file name under `completions/`."""
    return {FILE_NAMES[shell]: script(shell, command) for shell in SHELLS}
