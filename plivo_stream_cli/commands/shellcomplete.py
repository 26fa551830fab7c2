"""Shell completion for `pstream`: the bash, zsh and fish scripts and the per-TAB protocol.

On each TAB the shell runs `pstream` with `_PSTREAM_COMPLETE=complete_<shell>` and the words typed
so far (the scripts in `completions/`, written by `scripts/gen_completions.py`, say how). This
module answers it through click's public API only (`get_command`, `get_params`,
`shell_complete`, `Context`), never Typer's internals: it finds the command the words reach,
then what the last word is (an option name, an option's value or an argument) without parsing
any value, so a TAB never imports rich or pydantic and never runs a command.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from typing import Any

PROG_NAME = "pstream"
COMPLETE_VAR = "_PSTREAM_COMPLETE"
ARGS_VAR = "_TYPER_COMPLETE_ARGS"  # the name the scripts have always used (installed copies)
FISH_ACTION_VAR = "_TYPER_COMPLETE_FISH_ACTION"
SHELLS = ("bash", "zsh", "fish")
FILE_NAMES = {"bash": "pstream.bash", "zsh": "_pstream", "fish": "pstream.fish"}
_WHITESPACE = re.compile(r"\s")

_SCRIPTS = {
    "bash": """\
_pstream_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   _PSTREAM_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _pstream_completion pstream
""",
    "zsh": """\
#compdef pstream

_pstream_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PSTREAM_COMPLETE=complete_zsh pstream)
}

compdef _pstream_completion pstream
""",
    "fish": (
        'complete --command pstream --no-files --arguments "(env _PSTREAM_COMPLETE=complete_fish'
        ' _TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) pstream)"'
        ' --condition "env _PSTREAM_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args'
        ' _TYPER_COMPLETE_ARGS=(commandline -cp) pstream"\n'
    ),
}


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


def script(shell: str, command: Any = None) -> str:
    """The completion script for `shell` (bash, zsh or fish)."""
    return _SCRIPTS[shell]


def generate(command: Any = None) -> dict[str, str]:
    """Every script, by its file name under `completions/`."""
    return {FILE_NAMES[shell]: script(shell) for shell in SHELLS}


# ---------------------------------------------------------------- answering a TAB


def split(line: str) -> list[str]:
    """The words of a command line as the shell would split them (an open quote is kept)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        words.extend(lexer)
    except ValueError:
        words.append(lexer.token)
    return words


def words_from_environment(shell: str) -> tuple[list[str], str]:
    """The words before the cursor (program name dropped) and the word being typed."""
    if shell == "bash":
        words = split(os.environ.get("COMP_WORDS", ""))
        cword = int(os.environ.get("COMP_CWORD", "0") or 0)
        incomplete = words[cword] if cword < len(words) else ""
        return words[1:cword], incomplete
    line = os.environ.get(ARGS_VAR, "")
    words = split(line)[1:]
    if words and not line.endswith(" "):
        return words[:-1], words[-1]
    return words, ""


def completions(root: Any, args: list[str], incomplete: str) -> list[tuple[str, str | None]]:
    """(value, description) pairs for the word being typed after `args`."""
    ctx = root.context_class(root, info_name=PROG_NAME, resilient_parsing=True)
    command = root
    rest = list(args)
    while hasattr(command, "list_commands"):
        name, rest = _first_word(command, ctx, rest)
        if name is None:
            break
        sub = command.get_command(ctx, name)
        if sub is None:
            return []
        ctx = sub.context_class(sub, parent=ctx, info_name=name, resilient_parsing=True)
        command = sub
    if "=" in incomplete and incomplete.startswith("--"):
        option, _, incomplete = incomplete.partition("=")
        rest.append(option)
    target = _target(command, ctx, rest, incomplete)
    items = target.shell_complete(ctx, incomplete)
    return [(str(item.value), item.help) for item in items]


def _first_word(command: Any, ctx: Any, args: list[str]) -> tuple[str | None, list[str]]:
    """The sub-command word among `args` (options before it skipped) and the words after it."""
    takes_value = _value_options(command, ctx)
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return (args[index + 1], args[index + 2 :]) if index + 1 < len(args) else (None, [])
        if word.startswith("-"):
            index += 2 if word in takes_value else 1
            continue
        return word, args[index + 1 :]
    return None, []


def _value_options(command: Any, ctx: Any) -> set[str]:
    names: set[str] = set()
    for param in command.get_params(ctx):
        if param.param_type_name == "option" and not (param.is_flag or param.count):
            names.update(param.opts)
    return names


def _target(command: Any, ctx: Any, args: list[str], incomplete: str) -> Any:
    """What completes `incomplete`: the command (option names), an option, or an argument."""
    params = command.get_params(ctx)
    if "--" not in args and incomplete.startswith("-"):
        return command
    if args and args[-1] in _value_options(command, ctx) and "--" not in args[:-1]:
        return next(p for p in params if args[-1] in p.opts)
    positional: float = _positionals(command, ctx, args)
    for param in params:
        if param.param_type_name != "argument":
            continue
        nargs = param.nargs if param.nargs > 0 else float("inf")
        if positional < nargs:
            return param
        positional -= nargs
    return command


def _positionals(command: Any, ctx: Any, args: list[str]) -> int:
    takes_value = _value_options(command, ctx)
    count, index, literal = 0, 0, False
    while index < len(args):
        word = args[index]
        if literal or not word.startswith("-"):
            count += 1
        elif word == "--":
            literal = True
        elif word in takes_value:
            index += 1
        index += 1
    return count


def _bash(items: list[tuple[str, str | None]]) -> str:
    return "\n".join(value for value, _ in items)


def _zsh(items: list[tuple[str, str | None]]) -> str:
    if not items:
        return "_files"
    shown = [
        f'"{_zsh_escape(value)}":"{_zsh_escape(plain(text))}"'
        if text
        else f'"{_zsh_escape(value)}"'
        for value, text in items
    ]
    body = "\n".join(shown)
    return f"_arguments '*: :(({body}))'"


def _fish(items: list[tuple[str, str | None]]) -> str:
    return "\n".join(
        f"{value}\t{plain(_WHITESPACE.sub(' ', text))}" if text else value for value, text in items
    )


FORMATS: dict[str, Callable[[list[tuple[str, str | None]]], str]] = {
    "bash": _bash,
    "zsh": _zsh,
    "fish": _fish,
}


def _zsh_escape(text: str) -> str:
    # The quoting the zsh script's `_arguments` spec needs.
    return (
        text.replace('"', '""')
        .replace("'", "''")
        .replace("$", "\\$")
        .replace("`", "\\`")
        .replace(":", r"\\:")
    )


def answer(root: Any, instruction: str) -> int | None:
    """Answer `_PSTREAM_COMPLETE=<instruction>` on stdout; the exit code, or None if not ours.

    `complete_<shell>` prints the candidates; `source_<shell>` prints the script.
    """
    action, _, shell = instruction.partition("_")
    if shell not in SHELLS:
        return None
    if action == "source":
        print(script(shell), end="")
        return 0
    if action != "complete":
        return None
    args, incomplete = words_from_environment(shell)
    items = completions(root, args, incomplete)
    if shell == "fish" and os.environ.get(FISH_ACTION_VAR) == "is-args":
        return 0 if items else 1
    text = FORMATS[shell](items)
    if text:
        print(text)
    return 0
