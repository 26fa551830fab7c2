"""JUnit XML for CI: one testcase per simulated call, and one per assertion of each call.

Pure: `render` returns the document as a string (the adapter writes it). The shape is the one
GitHub Actions' test reporters and GitLab's `artifacts:reports:junit` read: `<testsuites>` holding
one `<testsuite>` with `tests`/`failures`/`errors`/`skipped`/`time`, each `<testcase>` with
`classname`, `name` and `time`, a failed one carrying `<failure message="..." type="...">`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    classname: str  # the scenario (or `simulate`) and the call, e.g. "greeting.call-1"
    name: str
    seconds: float = 0.0
    failure: str | None = None  # None: passed
    output: str = ""  # shown as <system-out>

    @property
    def failed(self) -> bool:
        return self.failure is not None


def render(suite: str, cases: Sequence[Case], timestamp: str | None = None) -> str:
    """The JUnit XML document of one suite."""
    failures = sum(c.failed for c in cases)
    total = f"{sum(c.seconds for c in cases):.3f}"
    root = ET.Element(
        "testsuites", name=suite, tests=str(len(cases)), failures=str(failures), time=total
    )
    attrs = {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": "0",
        "time": total,
    }
    if timestamp:
        attrs["timestamp"] = timestamp
    node = ET.SubElement(root, "testsuite", attrs)
    for case in cases:
        item = ET.SubElement(
            node, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}"
        )
        if case.failure is not None:
            failure = ET.SubElement(
                item, "failure", message=_clean(case.failure), type="AssertionError"
            )
            failure.text = _clean(case.failure)
        if case.output:
            ET.SubElement(item, "system-out").text = _clean(case.output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _clean(text: str) -> str:
    """Drop the control characters XML 1.0 cannot carry (a bot's close reason may hold any)."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)
