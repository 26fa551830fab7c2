"""The click classes behind every command: plain, fast help with option panels, cheap completion.

pstream renders help without rich (`rich_markup_mode=None`): rich's help renderer costs more than
all of `import typer` and would put `pstream --help` far past its start-up budget. These classes
keep what the rich help had: options grouped by their `rich_help_panel`, and "Example:"
paragraphs printed as written (never re-wrapped, so they can be copied).

Parsing stays off Typer's pydantic-backed value coercion where its result is not needed (see
`lighten`), so `pstream CMD --help` and completion never import pydantic. The root group builds
a command's click object only when that command is used (`LazyGroup`): building all of them
costs as much again as pstream's own imports, for a list of names and one-line descriptions.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

EXAMPLE = "Example:"
OPTIONS = "Options"
_NO_WRAP = "\b"  # click prints a paragraph that starts with this line as written


class Command(TyperCommand):
    """A command whose plain help groups options by panel and keeps examples as written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = keep_examples(self.help)
        self.epilog = keep_examples(self.epilog)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_panels(self, ctx, formatter)

    def get_params(self, ctx: Any) -> list[Any]:
        return lighten(super().get_params(ctx), completing=ctx.resilient_parsing)


class Group(TyperGroup):
    """The root app and `signature`: same help conventions, same light parsing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = keep_examples(self.help)
        self.epilog = keep_examples(self.epilog)

    def get_params(self, ctx: Any) -> list[Any]:
        return lighten(super().get_params(ctx), completing=ctx.resilient_parsing)


class LazyGroup(Group):
    """A group whose commands live in `registry` and are built one by one, when used.

    Listing them (`pstream --help`, `pstream <TAB>`) needs only each command's name and first
    line of help: a bare stand-in with no parameters gives those at no cost.
    """

    registry: typer.Typer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._infos = {info.name: info for info in self.registry.registered_commands}
        self._groups = {info.name: info for info in self.registry.registered_groups}
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [str(name) for name in (*self._infos, *self._groups)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            if self._listing and cmd_name in self._infos:
                return _stand_in(self._infos[cmd_name])
            if self._listing and cmd_name in self._groups:
                return _group_stand_in(self._groups[cmd_name])
            built = self._build(cmd_name)
            if built is None:
                return None
            self.commands[cmd_name] = built
        return self.commands[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self._stand_ins():
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self._stand_ins():
            return super().shell_complete(ctx, incomplete)

    @contextlib.contextmanager
    def _stand_ins(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def _build(self, name: str) -> Any:
        """The command as Typer builds it for a group (the same calls, one command at a time)."""
        registry = self.registry
        if name in self._groups:
            return typer.main.get_group_from_info(
                self._groups[name],
                pretty_exceptions_short=registry.pretty_exceptions_short,
                suggest_commands=registry.suggest_commands,
                rich_markup_mode=self.rich_markup_mode,
            )
        if name in self._infos:
            return typer.main.get_command_from_info(
                self._infos[name],
                pretty_exceptions_short=registry.pretty_exceptions_short,
                rich_markup_mode=self.rich_markup_mode,
            )
        return None


def lazy_group(registry: typer.Typer) -> type[LazyGroup]:
    """The root group class for commands registered on `registry`."""
    return type("RootGroup", (LazyGroup,), {"registry": registry})


def _stand_in(info: Any) -> TyperCommand:
    """A command's name and help, without its parameters (which are what costs)."""
    help_text = info.help if info.help is not None else inspect.getdoc(info.callback)
    return TyperCommand(
        name=info.name,
        help=help_text,
        short_help=info.short_help,
        hidden=info.hidden,
        rich_markup_mode=None,
    )


def _group_stand_in(info: Any) -> TyperCommand:
    """A sub-group's name and help; its help is on the group or on its Typer (else a default)."""
    typer_info = info.typer_instance.info if info.typer_instance else None
    helps = (info.help, getattr(typer_info, "help", None))
    help_text = next((h for h in helps if isinstance(h, str)), None)
    return TyperCommand(name=info.name, help=help_text, rich_markup_mode=None)


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
        if param.param_type_name == "argument":
            arguments.append(record)
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


class _Uncoerced:
    """Stands in for a parameter's coercion while completing: the raw value is enough."""

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        return value


class _Deferred:
    """Typer's coercion, built only for a value that needs it (a missing value does not)."""

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # what Typer's coercion returns for None, without building it
            return () if param.multiple or param.nargs == -1 else None
        param._runtime_param = None
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


_UNCOERCED = _Uncoerced()
_DEFERRED = _Deferred()
_ABSENT = object()


def lighten(params: list[Any], *, completing: bool) -> list[Any]:
    """Keep parsing off Typer's pydantic-backed coercion where its result is not needed.

    Typer builds each parameter's coercion (a pydantic TypeAdapter; importing pydantic costs
    more than `import typer`) the first time it processes a value, even None. Parameters not
    given on the command line (the root's --help when a sub-command runs) then skip it, and so
    does completion, which throws the values away. With a Typer that has no such attribute
    nothing changes.
    """
    stand_in = _UNCOERCED if completing else _DEFERRED
    for param in params:
        current = getattr(param, "_runtime_param", _ABSENT)
        if current is None or current is _DEFERRED:
            param._runtime_param = stand_in
    return params
