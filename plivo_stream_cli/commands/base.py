"""The click classes behind every command: plain, fast help with option panels, cheap listing,
one-line usage errors.

pstream renders help without rich (`rich_markup_mode=None`): rich's help renderer costs more than
all of `import typer` and would put `pstream --help` far past its start-up budget. These classes
keep what the rich help had: options grouped by their `rich_help_panel`, and "Example:"
paragraphs printed as written (never re-wrapped, so they can be copied).

The root group builds a command's click object only when that command is used (`LazyGroup`):
building all of them costs as much again as pstream's own imports, for a list of names and
one-line descriptions. Everything here uses Typer's and click's public API only (`typer.Typer`,
`typer.main.get_command`, `typer.core.TyperCommand`/`TyperGroup`, click's `get_command`,
`list_commands`, `parse_args`, `resolve_command`, `format_commands`, `shell_complete`), so any
Typer release from the lower bound in pyproject.toml on works.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

EXAMPLE = "Example:"
OPTIONS = "Options"
_NO_WRAP = "\b"  # click prints a paragraph that starts with this line as written
_SPACES = re.compile(r"\s+")
_TYPE_LABEL = re.compile(r" <[^<>]*>$")  # Typer's `<float range>`: the metavar says it

# click's exception classes, reached through the one Typer exports (click may be vendored).
_USAGE_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION: Any = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class OneLineUsageError(_CLICK_EXCEPTION):  # type: ignore[misc]
    """A usage error shown as pstream shows every error: one `error:` line, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        from plivo_stream_cli.console import output

        output.error(self.message)


def one_line(exc: Exception) -> Exception:
    """`exc` as a one-line error naming the flag, when it is one of click's usage errors.

    An error that prints something else (the help for a bare group) is left as it is.
    """
    if not isinstance(exc, _USAGE_ERROR) or type(exc).show is not _USAGE_ERROR.show:
        return exc
    param = getattr(exc, "param", None)
    message = _choice(str(getattr(exc, "message", exc)).removeprefix("Value error, "))
    if param is not None and type(exc).__name__ == "BadParameter":
        text = f"{flag_name(param)}: {message}"
    else:
        text = exc.format_message()
    text = _SPACES.sub(" ", text.replace("\n\t", " ").strip()).replace("Choose from: ", "")
    return OneLineUsageError(f"{text} (see {_command_path(exc)} --help)")


_NOT_ONE_OF = re.compile(r"^(.*?) is not (?:one of )?(.*?)\.?$")


def _choice(message: str) -> str:
    """Typer's and click's "'PUT' is not one of 'get', 'post'." as "accepts ... (got 'PUT')"."""
    match = _NOT_ONE_OF.match(message)
    if match is None or "'" not in match.group(2):
        return message
    return f"accepts {match.group(2)} (got {match.group(1)})"


def _command_path(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    words = str(getattr(ctx, "command_path", "") or "").split()[1:]
    return " ".join(["pstream", *words])


def flag_name(param: Any) -> str:
    """How the user wrote a parameter: its long option, else its metavar (an argument)."""
    opts = [o for o in getattr(param, "opts", ()) if o.startswith("--")] or list(
        getattr(param, "opts", ())
    )
    if getattr(param, "param_type_name", "") == "argument" or not opts:
        return str(param.metavar or param.name).upper()
    return str(opts[0])


def _uniform_metavars(params: list[Any]) -> None:
    """Placeholders in one style: an upper-case word (URL, SECONDS), never `<str>` or TEXT."""
    for param in params:
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        if getattr(param, "count", False):
            continue
        param.metavar = str(param.name).upper()


class LightHelp:
    """`--help` that costs nothing when it is not given.

    Typer runs each parameter's value through its coercion (pydantic-backed in recent
    releases, which costs more than `import typer`) even when the value is absent; an absent
    help flag has nothing to coerce and its callback does nothing.
    """

    light_help: Any = None

    def get_help_option(self, ctx: Any) -> Any:
        if self.light_help is None:  # one object: click orders eager callbacks by identity
            option = super().get_help_option(ctx)  # type: ignore[misc]
            if option is None:
                return None
            given = option.process_value

            def process_value(ctx: Any, value: Any) -> Any:
                return given(ctx, value) if value else False

            option.process_value = process_value
            self.light_help = option
        return self.light_help


def plain_values(params: list[Any], callback: Any) -> None:
    """Convert the values of `callback`'s parameters by pstream's rules, without Typer's.

    Recent Typer releases run every value, even an absent one, through a pydantic-backed
    coercion: importing pydantic costs more than all of `pstream xml`'s own work. The values
    pstream takes are plain (text, paths, choices, lists of text, numbers with a `values`
    parser), so each parameter's public `process_value` converts them directly; a parameter of
    any other kind keeps Typer's coercion.
    """
    if not COERCES_WITH_PYDANTIC:
        return  # Typer before 0.29 converts values with click's types, which cost nothing
    try:
        fn = inspect.unwrap(callback)
        hints = typing.get_type_hints(fn)
        infos = {name: p.default for name, p in inspect.signature(fn).parameters.items()}
    except (TypeError, ValueError, NameError):
        return
    for param in params:
        convert = _converter(hints.get(param.name), infos.get(param.name))
        if convert is not None and not getattr(param, "is_flag", False):
            param.process_value = _processor(param, convert)


def _converter(annotation: Any, info: Any) -> Callable[[Any], Any] | None:
    parser = getattr(info, "parser", None)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if parser is not None:
        return cast(Callable[[Any], Any], parser)
    if annotation is str:
        return str
    if annotation is Path:
        return Path
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return lambda value: [str(v) for v in value]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choice_of(annotation, bool(getattr(info, "case_sensitive", True)))
    return None


def _choice_of(kind: type[enum.Enum], case_sensitive: bool) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        for member in kind:
            given, known = str(value), str(member.value)
            if given == known or (not case_sensitive and given.lower() == known.lower()):
                return member
        choices = ", ".join(repr(m.value) for m in kind)
        raise typer.BadParameter(f"{value!r} is not one of {choices}.")

    return convert


_PLAIN = (str, int, float, Path, enum.Enum, tuple, list)


def _typer_version() -> tuple[int, ...]:
    parts = []
    for piece in typer.__version__.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# Typer 0.29 replaced click's conversions (the values its own callback wrapper then turns into
# enums and paths) with pydantic-backed coercion.
COERCES_WITH_PYDANTIC = _typer_version() >= (0, 29)


def _processor(param: Any, convert: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    typer_way = param.process_value

    def process_value(ctx: Any, value: Any) -> Any:
        if value is None or (value in ((), []) and (param.multiple or param.nargs != 1)):
            if param.required:
                return typer_way(ctx, value)  # Typer's "Missing option" error
            value = None
        elif isinstance(value, _PLAIN):
            value = convert(value)
        else:
            return typer_way(ctx, value)
        if param.callback is not None:
            value = param.callback(ctx, param, value)
        return value

    return process_value


class Command(LightHelp, TyperCommand):
    """A command whose plain help groups options by panel and keeps examples as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = keep_examples(self.help)
        self.epilog = keep_examples(self.epilog)
        _uniform_metavars(self.params)
        plain_values(self.params, self.callback)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = flag_name(param) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_panels(self, ctx, formatter)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _USAGE_ERROR as exc:
            raise one_line(exc) from None


class Group(LightHelp, TyperGroup):
    """The root app and `signature`: same help conventions, same one-line usage errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = keep_examples(self.help)
        self.epilog = keep_examples(self.epilog)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _USAGE_ERROR as exc:
            raise one_line(exc) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except _USAGE_ERROR as exc:
            raise one_line(exc) from None


@dataclass
class Entry:
    """A registered command: what builds it, and what a listing shows without building it."""

    name: str
    build: Callable[[], Any]
    help: str | None
    hidden: bool = False
    group: bool = False


@dataclass
class Registry:
    """Where command modules register (`add(registry, fn, name)`, `registry.add_typer(...)`).

    It has the registration calls of `typer.Typer` that pstream uses, and keeps each command
    apart so that the root group can build one without the others.
    """

    entries: dict[str, Entry] = field(default_factory=dict)

    def command(self, name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(fn: Callable[..., Any]) -> Any:
            def build() -> Any:
                single = typer.Typer(rich_markup_mode=None, add_completion=False)
                single.command(name, **kwargs)(fn)
                return typer.main.get_command(single)

            text = kwargs.get("help") or inspect.getdoc(fn)
            self.entries[name] = Entry(name, build, text, bool(kwargs.get("hidden")))
            return fn

        return register

    def add_typer(self, group: typer.Typer, *, name: str, help: str | None = None) -> None:
        self.entries[name] = Entry(name, lambda: typer.main.get_command(group), help, group=True)


class LazyGroup(Group):
    """A group whose commands live in `registry` and are built one by one, when used.

    Listing them (`pstream --help`, `pstream <TAB>`) needs only each command's name and first
    line of help: a bare stand-in with no parameters gives those at no cost.
    """

    registry: Registry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        entries = self.registry.entries.values()  # commands, then groups of commands
        return [e.name for e in sorted(entries, key=lambda e: e.group)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.registry.entries.get(cmd_name)
        if entry is None:
            return None
        if self.listing:
            return TyperCommand(
                name=entry.name, help=entry.help, hidden=entry.hidden, rich_markup_mode=None
            )
        built = entry.build()
        built.name = cmd_name
        self.commands[cmd_name] = built
        return built

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in self.registry.entries:
            import difflib

            near = difflib.get_close_matches(args[0], self.list_commands(ctx), n=2)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise OneLineUsageError(f"no command {args[0]!r}{hint} (see pstream --help)")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self.stand_ins():
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self.stand_ins():
            return super().shell_complete(ctx, incomplete)

    @contextlib.contextmanager
    def stand_ins(self) -> Iterator[None]:
        """While listing, commands not built yet are stand-ins (name and help only)."""
        self.listing = True
        try:
            yield
        finally:
            self.listing = False


def lazy_group(registry: Registry) -> type[LazyGroup]:
    """The root group class for commands registered on `registry`."""
    return type("RootGroup", (LazyGroup,), {"registry": registry})


def keep_examples(text: str | None) -> str | None:
    """Mark each paragraph that starts with "Example:" so click does not re-wrap it."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    return "\n\n".join(
        f"{_NO_WRAP}\n{p}" if p.lstrip().startswith(EXAMPLE) else p for p in paragraphs
    )


def format_panels(command: Any, ctx: Any, formatter: Any) -> None:
    """Arguments, then options in sections named after their panel ("Options" first)."""
    arguments: list[tuple[str, str]] = []
    panels: dict[str, list[tuple[str, str]]] = {OPTIONS: []}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        record = (_TYPE_LABEL.sub("", record[0]), record[1])
        if param.param_type_name == "argument":
            arguments.append((flag_name(param), record[1]))
        else:
            panel = getattr(param, "rich_help_panel", None) or OPTIONS
            panels.setdefault(panel, []).append(record)
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    for title, rows in panels.items():
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)
