"""Every number and URL flag of every command is checked at parse time: one `error:` line that
names the flag, exit 2, before anything runs (issue 22 items 2, 3 and 8)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from typer.models import ArgumentInfo, OptionInfo
from typer.testing import CliRunner

from plivo_stream_cli.cli import app
from plivo_stream_cli.commands import COMMAND_MODULES, values
from plivo_stream_cli.commands.signature_cmd import check, sign

CALL = "4f045f7a-b04a-4364-8523-74e6072f4f72"
# What each command needs before its flags are looked at (never run: parsing fails first).
REQUIRED: dict[str, list[str]] = {
    "xml": ["wss://example.com/stream"],
    "simulate": ["ws://127.0.0.1:9/stream"],
    "replay": ["capture.jsonl", "ws://127.0.0.1:9/stream"],
    "stop": [CALL],
    "get": [CALL],
    "start": [CALL, "wss://example.com/stream"],
    "call": ["+14155550100", "--from", "+14155550199"],
    "signature sign": ["https://example.com/"],
    "signature check": ["https://example.com/", "--signature", "x", "--nonce", "1"],
    "play": ["x.wav"],
    "checkpoint": ["name"],
    "completion": ["bash"],
}
BAD_NUMBERS = ["nan", "-inf", "1e400", "99999999999999999999", "abc"]
BAD_URLS = ["ws://127.0.0.1:99999/stream", "ws://[::1", "https://[::1/x", "not a url"]


def functions() -> Iterator[tuple[str, Any]]:
    """Every command function by the words that run it."""
    for module in COMMAND_MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and _is_command(fn):
                words = f"signature {name}" if fn in (sign, check) else name
                yield words, fn


def _is_command(fn: Any) -> bool:
    params = inspect.signature(fn).parameters.values()
    return any(isinstance(p.default, (OptionInfo, ArgumentInfo)) for p in params)


def numeric_parameters() -> Iterator[tuple[str, str, Any]]:
    """(command, flag, info) for every parameter typed int or float, in every command."""
    for words, fn in functions():
        hints = typing.get_type_hints(fn)
        for name, param in inspect.signature(fn).parameters.items():
            info = param.default
            if not isinstance(info, OptionInfo):
                continue
            kinds = set(typing.get_args(hints[name])) | {hints[name]}
            if kinds & {int, float} and bool not in kinds:
                flag = next(d for d in info.param_decls if d.startswith("--"))
                yield words, flag, info


NUMERIC = list(numeric_parameters())


def test_the_walk_finds_the_numeric_flags() -> None:
    found = {(words, flag) for words, flag, _ in NUMERIC}
    assert {("serve", "--port"), ("serve", "--max-buffer"), ("simulate", "--linger")} <= found
    assert {("get", "--retries"), ("simulate", "--speed"), ("demo", "--speed")} <= found
    assert len(found) >= 20


@pytest.mark.parametrize(("words", "flag", "info"), NUMERIC, ids=lambda x: str(x)[:30])
def test_every_numeric_flag_is_parsed_by_a_checking_parser(
    words: str, flag: str, info: Any
) -> None:
    assert info.parser is not None, f"pstream {words} {flag} takes any number: use values.*"


@pytest.mark.parametrize(("words", "flag"), [(w, f) for w, f, _ in NUMERIC], ids=str)
def test_every_numeric_flag_refuses_non_finite_and_huge_values(words: str, flag: str) -> None:
    for bad in BAD_NUMBERS:
        args = [*words.split(), *REQUIRED.get(words, []), flag, bad]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: {flag}: accepts "), (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "{url}"],
        ["replay", "capture.jsonl", "{url}"],
        ["signature", "sign", "{url}"],
        ["signature", "check", "{url}", "--signature", "x", "--nonce", "1"],
        ["serve", "--public-url", "{url}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_url_is_checked_at_parse_time(args: list[str]) -> None:
    for bad in BAD_URLS:
        line = [a.replace("{url}", bad) for a in args]
        result = CliRunner().invoke(app, line, env={"PLIVO_AUTH_TOKEN": "t"})
        assert result.exit_code == 2, (line, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, line


def test_a_dtmf_time_must_be_finite_and_within_a_day() -> None:
    for bad in ["5@1e300", "5@nan", "5@inf", "5@86401"]:
        result = CliRunner().invoke(app, ["simulate", "ws://127.0.0.1:9/s", "--dtmf", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert result.stderr.startswith("error: --dtmf: "), result.stderr


def test_record_reply_into_a_missing_directory_is_refused_before_the_call() -> None:
    result = CliRunner().invoke(
        app, ["simulate", "ws://127.0.0.1:9/s", "--record-reply", "/nonexistent/x.wav"]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "does not exist" in result.stderr and "Traceback" not in result.output


def test_typer_and_pydantic_messages_become_one_error_line_naming_the_flag() -> None:
    method = CliRunner().invoke(
        app, ["xml", "--status-callback-method", "PUT", "wss://example.com/stream"]
    )
    assert method.exit_code == 2
    assert method.stderr.startswith("error: --status-callback-method: accepts ")
    assert "Value error" not in method.stderr and method.stderr.count("\n") == 1
    port = CliRunner().invoke(app, ["serve", "-p", "abc"])
    assert port.stderr.startswith("error: --port: accepts a port number from 0 to 65535")
    assert "Input should be" not in port.stderr
    unknown = CliRunner().invoke(app, ["serve", "--nope"])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: No such option")
    assert "--nope" in unknown.stderr
    assert unknown.stderr.count("\n") == 1 and "Usage:" not in unknown.output


def test_help_placeholders_are_upper_case_words() -> None:
    for words in ("serve", "simulate", "xml", "get", "signature sign"):
        result = CliRunner().invoke(app, [*words.split(), "--help"])
        assert "<" not in result.stdout.split("Options:")[1].replace("<Speak>", ""), words
        for lower in (" TEXT ", " FLOAT", " INTEGER", "<str>", "range>"):
            assert lower not in result.stdout.replace("Say TEXT", "").replace("--speak TEXT", "")


def test_parsers_accept_what_is_in_range() -> None:
    parse = values.number_parser("seconds", 0, 10)
    assert parse("2.5") == 2.5 and parse(3) == 3 and parse(None) is None
    assert values.port_parser()("8080") == 8080
    assert values.url_parser(values.WS_SCHEMES)("ws://[::1]:8080/s") == "ws://[::1]:8080/s"


def test_an_unknown_command_is_one_line_with_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["serv"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "error: no command 'serv'; did you mean serve? (see pstream --help)\n"
    root = CliRunner().invoke(app, ["xml"])
    assert root.stderr.endswith("(see pstream xml --help)\n") and "  " not in root.stderr
