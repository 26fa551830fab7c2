"""JUnit XML: well-formed, counted, failures carried; parsed back with the stdlib."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from plivo_stream_cli.junit import Case, render


def test_cases_failures_and_counts() -> None:
    cases = [
        Case("greet.call-1", "call", 3.2),
        Case("greet.call-1", "replies_within_ms: 800", 0, failure="reply worst 912 ms > 800 ms"),
        Case("greet.call-1", "confirms_checkpoint: true", 0, output="1 confirmed"),
    ]
    text = render("pstream simulate", cases, timestamp="2026-12-01T22:00:00")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    (suite,) = root
    assert suite.tag == "testsuite"
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "3",
        "failures": "1",
        "errors": "0",
        "skipped": "0",
        "time": "3.200",
    }
    assert suite.get("timestamp") == "2026-12-01T22:00:00"
    names = [(c.get("classname"), c.get("name"), c.get("time")) for c in suite]
    assert names[0] == ("greet.call-1", "call", "3.200")
    failure = suite[1].find("failure")
    assert failure is not None and failure.get("message") == "reply worst 912 ms > 800 ms"
    assert failure.get("type") == "AssertionError" and failure.text == failure.get("message")
    assert suite[0].find("failure") is None
    out = suite[2].find("system-out")
    assert out is not None and out.text == "1 confirmed"


def test_markup_and_control_characters_are_escaped_or_dropped() -> None:
    text = render('a "suite" <&>', [Case("c", "n", failure="close reason \x00\x07<b>&")])
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.get("name") == 'a "suite" <&>'
    failure = root[0][0].find("failure")
    assert failure is not None and failure.get("message") == "close reason <b>&"


def test_an_empty_run_is_still_a_valid_document() -> None:
    root = ET.fromstring(render("empty", []).split("\n", 1)[1])
    assert root.get("tests") == "0" and len(root[0]) == 0
