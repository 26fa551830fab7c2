"""Scenario files: validation with file:line, and the assertions judged on real timelines."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from plivo_stream_cli import scenario
from plivo_stream_cli.scenario import (
    Assertion,
    BargeIn,
    DtmfStep,
    Hangup,
    Say,
    ScenarioError,
    Silence,
    WaitFor,
    evaluate,
    parse,
)

FULL = """\
name: greeting
content_type: audio/x-l16;rate=16000
speed: 2
extra_headers: "userId=7"
linger: 0.5
network: {loss: 2.5, jitter: 20, latency: 40, seed: 7}
steps:
  - say: clips/hello.wav
  - wait_for: audio
  - wait_for: {quiet: 600, timeout: 3}
  - silence: 1.5
  - dtmf: "12#"
  - wait_for: {checkpoint: reply-end, timeout: 5}
  - barge_in: {after_ms: 400, audio: builtin}
  - wait_for: clear
  - say
  - hangup
expect:
  - replies_within_ms: 800
  - clears_within_ms: 300
  - no_audio_after_clear: true
  - confirms_checkpoint: reply-end
  - replies_to_dtmf_within_ms: 1500
  - not: {replies_within_ms: 50}
"""


def everything(path: str) -> bool:
    return True


def problems(text: str, exists: object = everything) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse(text, "call.yaml", exists)  # type: ignore[arg-type]
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_a_full_scenario_parses_into_steps_and_assertions() -> None:
    seen: list[str] = []
    s = parse(FULL, "call.yaml", lambda p: seen.append(p) or True)
    assert seen == ["clips/hello.wav"]
    assert s.name == "greeting" and s.content_type == "audio/x-l16;rate=16000"
    assert (s.speed, s.extra_headers, s.linger) == (2.0, "userId=7", 0.5)
    assert (s.network.loss, s.network.jitter, s.network.latency, s.network.seed) == (2.5, 20, 40, 7)
    assert s.steps == (
        Say("clips/hello.wav", 8),
        WaitFor("audio", line=9),
        WaitFor("quiet", 3.0, quiet_ms=600, line=10),
        Silence(1.5, 11),
        DtmfStep("12#", 12),
        WaitFor("checkpoint", 5.0, checkpoint="reply-end", line=13),
        BargeIn(400, None, line=14),
        WaitFor("clear", line=15),
        Say(None, 16),
        Hangup(17),
    )
    assert [a.label for a in s.expect] == [
        "replies_within_ms: 800",
        "clears_within_ms: 300",
        "no_audio_after_clear: true",
        "confirms_checkpoint: 'reply-end'",
        "replies_to_dtmf_within_ms: 1500",
        "not replies_within_ms: 50",
    ]
    assert [a.line for a in s.expect] == [19, 20, 21, 22, 23, 24]
    assert s.audio_files() == ["clips/hello.wav"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps:\n  - say\nbogus: 1\n", "call.yaml:3: unknown key 'bogus' in the scenario"),
        ("steps:\n  - shout: x\n", "call.yaml:2: unknown step 'shout'"),
        ("steps:\n  - silence: -1\n", "call.yaml:2: silence (seconds) must be positive"),
        ("steps:\n  - silence: .nan\n", "call.yaml:2: silence (seconds) must be positive"),
        ("steps:\n  - silence: 100000000\n", "call.yaml:2: silence (seconds) must be positive"),
        ("steps:\n  - silence: ''\n", "call.yaml:2: silence (seconds) must be a number"),
        ("steps:\n  - dtmf: '5x'\n", "call.yaml:2: dtmf must be 1 to 32 of 0-9"),
        ("steps:\n  - wait_for: sound\n", "call.yaml:2: unknown key 'sound' in wait_for"),
        ("steps:\n  - wait_for: {audio: true, timeout: 0}\n", "call.yaml:2: wait_for.timeout"),
        (
            "steps:\n  - wait_for: {audio: true, clear: true}\n",
            "call.yaml:2: wait_for takes exactly",
        ),
        ("steps:\n  - barge_in: {audio: builtin}\n", "call.yaml:2: barge_in needs after_ms"),
        ("steps:\n  - say: ../secret.wav\n", "call.yaml:2: say '../secret.wav' escapes"),
        ("steps:\n  - say: a/../../b.wav\n", "call.yaml:2: say 'a/../../b.wav' escapes"),
        ("steps:\n  - say: /etc/x.wav\n", "call.yaml:2: say '/etc/x.wav' must be relative"),
        ("steps:\n  - say\nnetwork: {loss: 101}\n", "call.yaml:3: network.loss must be"),
        ("steps:\n  - say\nnetwork: {seed: -1}\n", "call.yaml:3: network.seed must be"),
        ("steps:\n  - say\nnetwork: {drop: 1}\n", "call.yaml:3: unknown key 'drop' in network"),
        ("steps:\n  - say\nspeed: 0\n", "call.yaml:3: speed must be positive"),
        ("steps:\n  - say\ncontent_type: audio/pcm\n", "call.yaml:3: content_type must be"),
        ("steps: []\n", "call.yaml:1: a scenario needs a non-empty `steps` list"),
        ("name: x\n", "call.yaml:1: a scenario needs a non-empty `steps` list"),
        ("- say\n", "call.yaml:1: a scenario must be a mapping"),
        ("steps:\n  - say\nexpect:\n  - fast: 1\n", "call.yaml:4: unknown assertion 'fast'"),
        ("steps:\n  - say\nexpect:\n  - replies_within_ms: -5\n", "call.yaml:4: replies_within"),
        (
            "steps:\n  - say\nexpect:\n  - not: {confirms_checkpoint: x}\n",
            "call.yaml:4: `not` applies to",
        ),
        ("steps:\n  - say\nsteps:\n  - say\n", "call.yaml:3: invalid YAML: duplicate key"),
        ("steps:\n  - hangup\n  - say\n", "call.yaml:2: hangup must be the last step"),
        ("steps:\n  - say: [\n", "call.yaml:3: invalid YAML"),
    ],
)
def test_a_bad_scenario_fails_with_its_file_and_line(text: str, expected: str) -> None:
    found = problems(text)
    assert found[0].startswith(expected), found


def test_every_problem_is_reported_in_file_order() -> None:
    text = "steps:\n  - silence: -1\n  - dtmf: x\nbogus: 1\n"
    found = problems(text)
    assert [p.split(":")[1] for p in found] == ["2", "3", "4"]


def test_a_missing_audio_file_is_an_error_with_its_line() -> None:
    text = "steps:\n  - say: there.wav\n  - barge_in: {after_ms: 1, audio: gone.wav}\n"
    found = problems(text, lambda p: p == "there.wav")
    assert found == [
        "call.yaml:3: barge_in.audio 'gone.wav': no such audio file next to the scenario"
    ]


def test_audio_paths_are_normalized_inside_the_directory() -> None:
    s = parse("steps:\n  - say: ./a/../b/c.wav\n", "call.yaml", everything)
    assert s.steps == (Say("b/c.wav", 2),)


@dataclass
class Ev:
    t: float
    kind: str
    detail: str = ""


def judge(expect: str, timeline: list[Ev]) -> scenario.Outcome:
    (assertion,) = parse(f"steps:\n  - say\nexpect:\n  - {expect}\n", "c.yaml", everything).expect
    (outcome,) = evaluate([assertion], timeline)
    return outcome


TURN = [Ev(1.0, "say-end"), Ev(1.3, "play"), Ev(1.5, "play")]


def test_replies_within_measures_from_each_turns_end() -> None:
    assert judge("replies_within_ms: 300", TURN).passed
    slow = judge("replies_within_ms: 299", TURN)
    assert not slow.passed and slow.measured == [300.0]
    second = [*TURN, Ev(2.0, "say-end")]  # no reply to the second turn
    missed = judge("replies_within_ms: 5000", second)
    assert not missed.passed and missed.measured == [300.0, None]


def test_a_missing_measurement_fails_plain_and_negated_forms() -> None:
    for form in ("replies_within_ms: 100", "not: {replies_within_ms: 100}"):
        assert not judge(form, []).passed, form
    for form in (
        "clears_within_ms: 100",
        "not: {clears_within_ms: 100}",
        "no_audio_after_clear: true",
    ):
        assert not judge(form, TURN).passed, form
    assert not judge("confirms_checkpoint: true", TURN).passed
    assert not judge("replies_to_dtmf_within_ms: 100", TURN).passed


def test_does_not_reply_passes_only_without_an_early_reply() -> None:
    assert not judge("not: {replies_within_ms: 300}", TURN).passed
    assert judge("not: {replies_within_ms: 299}", TURN).passed
    assert judge("not: {replies_to_dtmf_within_ms: 1000}", [Ev(1, "dtmf-end")]).passed
    assert not judge(
        "not: {replies_to_dtmf_within_ms: 1000}", [Ev(1, "dtmf-end"), Ev(1.2, "play")]
    ).passed


def test_clears_and_stale_audio_after_a_clear() -> None:
    barge = [Ev(2.0, "barge-in"), Ev(2.1, "play"), Ev(2.15, "clear"), Ev(3.0, "barge-in-end")]
    assert judge("clears_within_ms: 150", barge).passed
    assert not judge("clears_within_ms: 149", barge).passed
    assert judge("no_audio_after_clear: true", [*barge, Ev(3.4, "play")]).passed  # the next reply
    stale = judge("no_audio_after_clear: true", [*barge, Ev(2.5, "play")])
    assert not stale.passed and stale.measured == [350.0]


def test_checkpoints_must_be_sent_and_confirmed() -> None:
    sent = [Ev(1, "checkpoint", "a"), Ev(2, "played", "a"), Ev(2, "checkpoint", "b")]
    assert judge("confirms_checkpoint: a", sent).passed
    assert not judge("confirms_checkpoint: b", sent).passed
    assert not judge("confirms_checkpoint: c", sent).passed
    assert not judge("confirms_checkpoint: true", sent).passed
    assert judge("confirms_checkpoint: true", sent[:2]).passed


def test_outcomes_serialize_for_json() -> None:
    doc = judge("replies_within_ms: 300", TURN).to_dict()
    assert doc == {
        "assertion": "replies_within_ms: 300",
        "line": 4,
        "passed": True,
        "message": "reply worst 300 ms <= 300 ms",
        "measured_ms": [300.0],
    }
    assert isinstance(Assertion("x", 1).label, str)
