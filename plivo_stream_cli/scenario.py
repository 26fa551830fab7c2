"""Call scenarios: the YAML model of a scripted call, its validation, and its assertions.

Pure: `parse` takes the file's text (the adapter reads it) and an `exists` callable for audio
files, and either returns a `Scenario` or raises `ScenarioError` listing every problem as
`file:line: message`. `evaluate` judges a finished call's timeline against the scenario's
`expect` list. Nothing here opens a socket or a file.

A scenario, all keys optional but `steps`:

    name: greeting
    content_type: audio/x-mulaw;rate=8000
    speed: 1
    extra_headers: "userId=7"
    linger: 1                      # seconds on the call after the last step
    network: {loss: 2, jitter: 20, latency: 40, seed: 7}
    steps:
      - say: hello.wav             # or `say: builtin`; resolved next to the scenario file
      - wait_for: audio            # or {audio: true, timeout: 5}
      - wait_for: {quiet: 600, timeout: 10}   # 600 ms without playAudio (playback drained)
      - silence: 1.5
      - dtmf: "12#"
      - wait_for: {checkpoint: reply-end, timeout: 5}
      - barge_in: {after_ms: 400, audio: builtin}
      - wait_for: clear
      - hangup
    expect:
      - replies_within_ms: 800     # after every `say`
      - clears_within_ms: 300      # after every barge_in
      - no_audio_after_clear: true
      - confirms_checkpoint: reply-end   # or true: every checkpoint, at least one
      - replies_to_dtmf_within_ms: 1500
      - not: {replies_within_ms: 2000}   # the bot must NOT reply within 2 s

Every assertion fails when its measurement is missing (no caller speech to time from, no reply,
no clear): a missing measurement never passes. A negated assertion passes only when its anchor
(the caller's speech, the DTMF, the barge-in) happened and the bot did not do it in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

import yaml

from plivo_stream_cli.errors import UsageError

CONTENT_TYPES = ("audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000")
WAIT_KINDS = ("audio", "quiet", "checkpoint", "clear")
DEFAULT_TIMEOUT = 10.0  # seconds a wait_for waits unless told
DEFAULT_QUIET_MS = 500.0  # a wait_for quiet: this long without playAudio and nothing queued
BUILTIN = "builtin"
MAX_SECONDS = 3600.0
DIGITS = "0123456789*#ABCD"
TIMED = ("replies_within_ms", "clears_within_ms", "replies_to_dtmf_within_ms")
ASSERTIONS = (*TIMED, "no_audio_after_clear", "confirms_checkpoint")
TOP_KEYS = (
    "name",
    "content_type",
    "speed",
    "extra_headers",
    "linger",
    "network",
    "steps",
    "expect",
)
NETWORK_KEYS = ("loss", "jitter", "latency", "seed")


class ScenarioError(UsageError):
    """A scenario file that cannot be run; `problems` are `file:line: message` strings."""

    def __init__(self, problems: Sequence[str]) -> None:
        head = problems[0]
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
        super().__init__(head + more)
        self.problems = list(problems)


@dataclass(frozen=True)
class Network:
    """Seeded impairment: `loss` percent of 20 ms frames, `jitter`/`latency` in ms."""

    loss: float = 0.0
    jitter: float = 0.0
    latency: float = 0.0
    seed: int | None = None

    @property
    def impaired(self) -> bool:
        return bool(self.loss or self.jitter or self.latency)


@dataclass(frozen=True)
class Say:
    audio: str | None  # resolved relative path; None for the built-in clip
    line: int = 0


@dataclass(frozen=True)
class Silence:
    seconds: float
    line: int = 0


@dataclass(frozen=True)
class DtmfStep:
    digits: str
    line: int = 0


@dataclass(frozen=True)
class WaitFor:
    kind: str  # one of WAIT_KINDS
    timeout: float = DEFAULT_TIMEOUT
    checkpoint: str | None = None  # a name, or None for any checkpoint
    quiet_ms: float = DEFAULT_QUIET_MS
    line: int = 0


@dataclass(frozen=True)
class BargeIn:
    after_ms: float
    audio: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # seconds to wait for a reply to talk over
    line: int = 0


@dataclass(frozen=True)
class Hangup:
    line: int = 0


Step = Say | Silence | DtmfStep | WaitFor | BargeIn | Hangup


@dataclass(frozen=True)
class Assertion:
    kind: str  # one of ASSERTIONS
    value: float | str | bool
    negated: bool = False
    line: int = 0

    @property
    def label(self) -> str:
        text = f"{self.kind}: {_show(self.value)}"
        return f"not {text}" if self.negated else text


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    steps: tuple[Step, ...]
    expect: tuple[Assertion, ...] = ()
    network: Network = field(default_factory=Network)
    content_type: str | None = None
    speed: float = 1.0
    extra_headers: str = ""
    linger: float = 1.0

    def audio_files(self) -> list[str]:
        """Every audio path the steps name, relative to the scenario's directory."""
        return [s.audio for s in self.steps if isinstance(s, Say | BargeIn) and s.audio]


# ------------------------------------------------------------------ YAML with line numbers


class _Map(dict[Any, Any]):
    line = 0
    lines: dict[Any, int]


class _Seq(list[Any]):
    line = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out.lines:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


# ------------------------------------------------------------------ validation


class _Checker:
    def __init__(self, source: str, exists: Callable[[str], bool]) -> None:
        self.source = source
        self.exists = exists
        self.found: list[tuple[int, str]] = []

    def fail(self, line: int, message: str) -> None:
        self.found.append((line, message))

    @property
    def problems(self) -> list[str]:
        """`file:line: message`, in the file's order."""
        return [f"{self.source}:{n}: {m}" for n, m in sorted(self.found, key=lambda f: f[0])]

    def keys(self, data: _Map, allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for key, line in data.lines.items():
            if key not in allowed:
                self.fail(
                    line, f"unknown key {key!r} in {where} (expected one of {', '.join(allowed)})"
                )

    def number(
        self,
        value: Any,
        line: int,
        what: str,
        *,
        low: float = 0.0,
        high: float = MAX_SECONDS,
        positive: bool = False,
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(line, f"{what} must be a number, got {_show(value)}")
            return None
        number = float(value)
        if not math.isfinite(number) or number < low or number > high or (positive and number == 0):
            bound = "positive" if positive else f"at least {low:g}"
            self.fail(line, f"{what} must be {bound} and at most {high:g}, got {_show(value)}")
            return None
        return number

    def audio(self, value: Any, line: int, what: str) -> str | None:
        if value is None or value == BUILTIN:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(line, f"{what} must be a WAV path or {BUILTIN!r}, got {_show(value)}")
            return None
        path = PurePosixPath(value.replace("\\", "/"))
        parts: list[str] = []
        for part in path.parts:
            if part == "..":
                if not parts:
                    self.fail(line, f"{what} {value!r} escapes the scenario's directory")
                    return None
                parts.pop()
            elif part not in (".", ""):
                parts.append(part)
        if path.is_absolute() or not parts or ":" in parts[0]:
            self.fail(line, f"{what} {value!r} must be relative to the scenario's directory")
            return None
        relative = "/".join(parts)
        if not self.exists(relative):
            self.fail(line, f"{what} {value!r}: no such audio file next to the scenario")
            return None
        return relative


def parse(text: str, source: str, exists: Callable[[str], bool]) -> Scenario:
    """Validate a scenario's YAML fully; `exists(relative_path)` says whether an audio file is
    there (and inside the scenario's directory). Raises `ScenarioError` with every problem."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ScenarioError([f"{source}:{line}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{source}:1: invalid YAML: {exc}"]) from None
    check = _Checker(source, exists)
    if not isinstance(data, _Map):
        check.fail(1, "a scenario must be a mapping with a `steps` list")
        raise ScenarioError(check.problems)
    check.keys(data, TOP_KEYS, "the scenario")
    name = data.get("name", PurePosixPath(source).stem)
    if not isinstance(name, str) or not name.strip():
        check.fail(data.lines.get("name", 1), f"name must be a non-empty string, got {_show(name)}")
        name = source
    content_type = data.get("content_type")
    if content_type is not None and content_type not in CONTENT_TYPES:
        check.fail(
            data.lines["content_type"],
            f"content_type must be one of {', '.join(CONTENT_TYPES)}, got {_show(content_type)}",
        )
        content_type = None
    speed = 1.0
    if "speed" in data:
        speed = (
            check.number(data["speed"], data.lines["speed"], "speed", high=100, positive=True)
            or 1.0
        )
    linger = 1.0
    if "linger" in data:
        linger = check.number(data["linger"], data.lines["linger"], "linger") or 0.0
    extra = data.get("extra_headers", "")
    if not isinstance(extra, str) or len(extra.encode()) > 512:
        check.fail(
            data.lines.get("extra_headers", 1),
            "extra_headers must be a string of at most 512 bytes",
        )
        extra = ""
    network = _network(check, data)
    steps = _steps(check, data)
    expect = _expect(check, data)
    if check.problems:
        raise ScenarioError(check.problems)
    return Scenario(
        name.strip(),
        source,
        tuple(steps),
        tuple(expect),
        network,
        content_type,
        speed,
        extra,
        linger,
    )


def _network(check: _Checker, data: _Map) -> Network:
    raw = data.get("network")
    if raw is None:
        return Network()
    if not isinstance(raw, _Map):
        check.fail(
            data.lines["network"], "network must be a mapping of loss, jitter, latency, seed"
        )
        return Network()
    check.keys(raw, NETWORK_KEYS, "network")
    values: dict[str, Any] = {}
    for key, high in (("loss", 100.0), ("jitter", 10_000.0), ("latency", 10_000.0)):
        if key in raw:
            values[key] = check.number(raw[key], raw.lines[key], f"network.{key}", high=high) or 0.0
    if "seed" in raw:
        seed = raw["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            check.fail(
                raw.lines["seed"], f"network.seed must be a non-negative integer, got {_show(seed)}"
            )
        else:
            values["seed"] = seed
    return Network(**values)


def _steps(check: _Checker, data: _Map) -> list[Step]:
    raw = data.get("steps")
    if not isinstance(raw, _Seq) or not raw:
        check.fail(data.lines.get("steps", data.line), "a scenario needs a non-empty `steps` list")
        return []
    steps: list[Step] = []
    for item, line in zip(raw, raw.lines, strict=True):
        step = _step(check, item, line)
        if step is not None:
            steps.append(step)
    hangups = [s.line for s in steps if isinstance(s, Hangup)]
    if hangups and hangups[0] != steps[-1].line:
        check.fail(hangups[0], "hangup must be the last step (the steps after it would never run)")
    return steps


STEP_KINDS = ("say", "silence", "dtmf", "wait_for", "barge_in", "hangup")


def _step(check: _Checker, item: Any, line: int) -> Step | None:
    if item == "hangup":
        return Hangup(line)
    if item == "say":
        return Say(None, line)
    if not isinstance(item, _Map) or len(item) != 1:
        check.fail(
            line, f"a step is a mapping with one of {', '.join(STEP_KINDS)}, got {_show(item)}"
        )
        return None
    ((kind, value),) = item.items()
    if kind not in STEP_KINDS:
        check.fail(line, f"unknown step {kind!r} (expected one of {', '.join(STEP_KINDS)})")
        return None
    if kind == "say":
        if isinstance(value, _Map):
            check.keys(value, ("audio",), "say")
            value = value.get("audio")
        audio = check.audio(value, line, "say")
        return Say(audio, line)
    if kind == "silence":
        seconds = check.number(value, line, "silence (seconds)", positive=True)
        return None if seconds is None else Silence(seconds, line)
    if kind == "dtmf":
        digits = (
            str(value).upper()
            if isinstance(value, str | int) and not isinstance(value, bool)
            else ""
        )
        if not digits or len(digits) > 32 or any(d not in DIGITS for d in digits):
            check.fail(line, f"dtmf must be 1 to 32 of 0-9 * # A-D, got {_show(value)}")
            return None
        return DtmfStep(digits, line)
    if kind == "hangup":
        if value not in (None, True):
            check.fail(line, "hangup takes no value")
        return Hangup(line)
    if kind == "barge_in":
        return _barge_in(check, value, line)
    return _wait_for(check, value, line)


def _barge_in(check: _Checker, value: Any, line: int) -> BargeIn | None:
    if not isinstance(value, _Map):
        after = check.number(value, line, "barge_in (ms after the reply begins)", high=600_000)
        return None if after is None else BargeIn(after, None, line=line)
    check.keys(value, ("after_ms", "audio", "timeout"), "barge_in")
    if "after_ms" not in value:
        check.fail(line, "barge_in needs after_ms")
        return None
    after = check.number(
        value["after_ms"], value.lines["after_ms"], "barge_in.after_ms", high=600_000
    )
    audio = check.audio(value.get("audio"), value.lines.get("audio", line), "barge_in.audio")
    timeout = DEFAULT_TIMEOUT
    if "timeout" in value:
        timeout = (
            check.number(
                value["timeout"], value.lines["timeout"], "barge_in.timeout", positive=True
            )
            or DEFAULT_TIMEOUT
        )
    return None if after is None else BargeIn(after, audio, timeout, line)


def _wait_for(check: _Checker, value: Any, line: int) -> WaitFor | None:
    if isinstance(value, str):
        value_map = _Map({value: True})
        value_map.lines = {value: line}
        value = value_map
    if not isinstance(value, _Map):
        check.fail(line, f"wait_for takes one of {', '.join(WAIT_KINDS)}, got {_show(value)}")
        return None
    check.keys(value, (*WAIT_KINDS, "timeout"), "wait_for")
    kinds = [k for k in value if k in WAIT_KINDS]
    if len(kinds) != 1:
        check.fail(line, f"wait_for takes exactly one of {', '.join(WAIT_KINDS)}")
        return None
    kind = kinds[0]
    arg, arg_line = value[kind], value.lines[kind]
    timeout = DEFAULT_TIMEOUT
    if "timeout" in value:
        timeout = (
            check.number(
                value["timeout"], value.lines["timeout"], "wait_for.timeout", positive=True
            )
            or DEFAULT_TIMEOUT
        )
    if kind == "checkpoint":
        if arg is not True and (not isinstance(arg, str) or not arg):
            check.fail(arg_line, f"wait_for checkpoint takes a name or true, got {_show(arg)}")
            return None
        return WaitFor(kind, timeout, None if arg is True else arg, line=line)
    if kind == "quiet":
        quiet = DEFAULT_QUIET_MS
        if arg is not True:
            quiet = (
                check.number(arg, arg_line, "wait_for quiet (ms)", high=600_000, positive=True)
                or DEFAULT_QUIET_MS
            )
        return WaitFor(kind, timeout, quiet_ms=quiet, line=line)
    if arg is not True:
        check.fail(arg_line, f"wait_for {kind} takes true, got {_show(arg)}")
        return None
    return WaitFor(kind, timeout, line=line)


def _expect(check: _Checker, data: _Map) -> list[Assertion]:
    raw = data.get("expect")
    if raw is None:
        return []
    if not isinstance(raw, _Seq):
        check.fail(data.lines["expect"], "expect must be a list of assertions")
        return []
    out = []
    for item, line in zip(raw, raw.lines, strict=True):
        assertion = _assertion(check, item, line, negated=False)
        if assertion is not None:
            out.append(assertion)
    return out


def _assertion(check: _Checker, item: Any, line: int, *, negated: bool) -> Assertion | None:
    if not isinstance(item, _Map) or len(item) != 1:
        check.fail(line, f"an assertion is a mapping with one of {', '.join(ASSERTIONS)} or not")
        return None
    ((kind, value),) = item.items()
    line = item.lines[kind]
    if kind == "not":
        if negated:
            check.fail(line, "`not` cannot be nested")
            return None
        inner = _assertion(check, value, line, negated=True)
        if inner is not None and inner.kind not in TIMED:
            check.fail(line, f"`not` applies to {', '.join(TIMED)}, not {inner.kind}")
            return None
        return inner
    if kind not in ASSERTIONS:
        check.fail(
            line, f"unknown assertion {kind!r} (expected one of {', '.join(ASSERTIONS)}, not)"
        )
        return None
    if kind in TIMED:
        limit = check.number(value, line, kind, high=600_000)
        return None if limit is None else Assertion(kind, limit, negated, line)
    if kind == "no_audio_after_clear":
        if value is not True:
            check.fail(line, f"no_audio_after_clear takes true, got {_show(value)}")
            return None
        return Assertion(kind, True, negated, line)
    if value is not True and (not isinstance(value, str) or not value):
        check.fail(line, f"confirms_checkpoint takes a name or true, got {_show(value)}")
        return None
    return Assertion(kind, value, negated, line)


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML writes it
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, _Map):
        return "a mapping"
    if isinstance(value, _Seq):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------ assertions


class TimelineEvent(Protocol):
    """What `evaluate` reads of the simulator's timeline (simulator.TimedEvent)."""

    @property
    def t(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def detail(self) -> str: ...


# Marks the scenario runner adds to the timeline, beyond the simulator's own.
SAY_END = "say-end"  # the caller's speech of one `say` ended (its last speech frame was sent)
DTMF_END = "dtmf-end"  # the last digit of one `dtmf` step was sent
BARGE_IN = "barge-in"  # the first frame of a barge-in was sent
BARGE_IN_END = "barge-in-end"  # its last frame was sent
STEP_FAILED = "step-failed"  # a wait_for timed out, a barge-in found no reply


@dataclass(frozen=True)
class Outcome:
    """One assertion judged on one call."""

    assertion: Assertion
    passed: bool
    message: str
    measured: list[float | None] = field(default_factory=list)  # ms per anchor; None: missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "assertion": self.assertion.label,
            "line": self.assertion.line,
            "passed": self.passed,
            "message": self.message,
            "measured_ms": self.measured,
        }


def evaluate(expect: Sequence[Assertion], timeline: Sequence[TimelineEvent]) -> list[Outcome]:
    """Judge every assertion on one call's timeline."""
    return [_judge(a, timeline) for a in expect]


def _first(timeline: Sequence[TimelineEvent], kind: str, after: float) -> float | None:
    return next((e.t for e in timeline if e.kind == kind and e.t >= after), None)


def _judge(a: Assertion, timeline: Sequence[TimelineEvent]) -> Outcome:
    if a.kind in TIMED:
        return _judge_timed(a, timeline)
    if a.kind == "no_audio_after_clear":
        return _judge_no_audio(a, timeline)
    return _judge_checkpoint(a, timeline)


_ANCHORS = {
    "replies_within_ms": (SAY_END, "play", "caller speech", "reply"),
    "replies_to_dtmf_within_ms": (DTMF_END, "play", "DTMF", "reply"),
    "clears_within_ms": (BARGE_IN, "clear", "barge-in", "clearAudio"),
}


def _judge_timed(a: Assertion, timeline: Sequence[TimelineEvent]) -> Outcome:
    anchor_kind, answer_kind, anchor_name, answer_name = _ANCHORS[a.kind]
    limit = float(a.value)
    anchors = [e.t for e in timeline if e.kind == anchor_kind]
    if not anchors:
        return Outcome(a, False, f"no {anchor_name} to measure from (missing measurement)")
    measured: list[float | None] = []
    for t in anchors:
        answer = _first(timeline, answer_kind, t)
        measured.append(None if answer is None else round((answer - t) * 1000, 1))
    if a.negated:
        early = [m for m in measured if m is not None and m <= limit]
        if early:
            return Outcome(
                a,
                False,
                f"{answer_name} {early[0]:g} ms after the {anchor_name}, within {limit:g}",
                measured,
            )
        return Outcome(
            a,
            True,
            f"no {answer_name} within {limit:g} ms of {len(anchors)} {anchor_name}",
            measured,
        )
    missing = measured.count(None)
    if missing:
        return Outcome(
            a, False, f"no {answer_name} after {missing} of {len(anchors)} {anchor_name}", measured
        )
    worst = max(m for m in measured if m is not None)
    verdict = "<=" if worst <= limit else ">"
    return Outcome(
        a, worst <= limit, f"{answer_name} worst {worst:g} ms {verdict} {limit:g} ms", measured
    )


def _judge_no_audio(a: Assertion, timeline: Sequence[TimelineEvent]) -> Outcome:
    """After each barge-in's clear, no playAudio until the caller's barge-in speech ends."""
    barges = [e.t for e in timeline if e.kind == BARGE_IN]
    if not barges:
        return Outcome(a, False, "no barge-in, so no clear to check (missing measurement)")
    measured: list[float | None] = []
    for began in barges:
        clear = _first(timeline, "clear", began)
        if clear is None:
            return Outcome(
                a, False, "the bot never cleared after the barge-in (missing measurement)"
            )
        ended = _first(timeline, BARGE_IN_END, began)
        until = ended if ended is not None else math.inf
        stale = [e.t for e in timeline if e.kind == "play" and clear < e.t <= until]
        if stale:
            late = round((stale[0] - clear) * 1000, 1)
            return Outcome(
                a,
                False,
                f"{len(stale)} playAudio after the clear, the first {late:g} ms after it",
                [late],
            )
        measured.append(None)
    return Outcome(
        a, True, f"no playAudio after {len(barges)} clear(s) while the caller talked", measured
    )


def _judge_checkpoint(a: Assertion, timeline: Sequence[TimelineEvent]) -> Outcome:
    received = [e.detail for e in timeline if e.kind == "checkpoint"]
    confirmed = [e.detail for e in timeline if e.kind == "played"]
    if a.value is True:
        if not received:
            return Outcome(a, False, "the bot sent no checkpoint (missing measurement)")
        left = [n for n in received if n not in confirmed]
        if left:
            return Outcome(
                a,
                False,
                f"checkpoint {left[0]!r} never confirmed (its audio was cleared or not played)",
            )
        return Outcome(a, True, f"{len(received)} checkpoint(s) confirmed")
    name = str(a.value)
    if name not in received:
        return Outcome(a, False, f"the bot never sent checkpoint {name!r}")
    if name not in confirmed:
        return Outcome(
            a, False, f"checkpoint {name!r} never confirmed (its audio was cleared or not played)"
        )
    return Outcome(a, True, f"checkpoint {name!r} confirmed")
