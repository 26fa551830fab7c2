"""Simulated calls from Python: what the pytest plugin's fixtures run, usable without pytest.

`await simulate_call(url, ...)` (or `simulate_call_sync`) runs a scenario — a YAML file, a dict
with the same keys, or just `steps`/`expect` lists — against a bot's WebSocket URL, with the same
runner, metrics and assertions as `pstream simulate --scenario`, and returns a `SimulatedRun`:
the `--json` document as `summary`, plus helpers to assert on it in plain Python.

    run = simulate_call_sync("ws://127.0.0.1:8080/stream",
                             steps=[{"say": "builtin"}, {"wait_for": "audio"}],
                             expect=[{"replies_within_ms": 800}])
    run.assert_passed()
    assert run.first_audio_ms < 500
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from plivo_stream_cli.adapters.scenario_runner import (
    ScenarioResult,
    identity_of,
    load_scenario,
    parse_scenario,
    run_scenarios,
    scenario_calls,
    summarize_run,
)
from plivo_stream_cli.formats import MediaFormat
from plivo_stream_cli.impairment import Impairment
from plivo_stream_cli.metrics import failures
from plivo_stream_cli.scenario import Network, Scenario

DEFAULT_STEPS: list[Any] = [{"say": "builtin"}, {"wait_for": {"quiet": 500, "timeout": 10}}]


@dataclass
class SimulatedRun:
    """The outcome of one or more simulated calls of a scenario."""

    summary: dict[str, Any]  # the `pstream simulate --json` document
    results: list[ScenarioResult]

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    @property
    def calls(self) -> list[dict[str, Any]]:
        return list(self.summary["calls"])

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        """Percentiles pooled over every call: {metric: {count, p50, p90, p99, max}}."""
        return dict(self.summary["metrics"])

    def metric(self, name: str, call: int = 0) -> Any:
        """One call's metric (`first_audio_ms`, `clear_ms`, `reply_gaps_ms`, ...)."""
        return self.summary["calls"][call]["metrics"][name]

    @property
    def first_audio_ms(self) -> float | None:
        return self.metric("first_audio_ms")  # type: ignore[no-any-return]

    @property
    def clear_ms(self) -> float | None:
        return self.metric("clear_ms")  # type: ignore[no-any-return]

    @property
    def failures(self) -> list[str]:
        """Every failed step and assertion, `call N: ...`."""
        out = []
        for number, call in enumerate(self.summary["calls"], start=1):
            out += [f"call {number}: {f}" for f in call.get("step_failures", [])]
            out += [
                f"call {number}: {a['assertion']}: {a['message']}"
                for a in call.get("assertions", [])
                if not a["passed"]
            ]
        return out

    def assert_passed(self) -> None:
        """Raise AssertionError listing every failure (a missing measurement is one)."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not self.passed:
            raise AssertionError("simulated call failed:\n  " + "\n  ".join(self.failures))


def _scenario(
    scenario: str | Path | dict[str, Any] | None,
    steps: Sequence[Any] | None,
    expect: Sequence[Any] | None,
    base_dir: str | Path | None,
    fmt: MediaFormat | None,
) -> tuple[Scenario, dict[str, bytes], bytes]:
    if isinstance(scenario, str | Path):
        path = Path(scenario)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        parsed, audio, text = load_scenario(path, fmt)
        return parsed, audio, text.encode()
    doc = dict(scenario or {})
    if steps is not None:
        doc["steps"] = list(steps)
    if expect is not None:
        doc["expect"] = list(expect)
    doc.setdefault("name", "python")
    doc.setdefault("steps", DEFAULT_STEPS)
    text = yaml.safe_dump(doc, sort_keys=False)
    parsed, audio = parse_scenario(text, "<python scenario>", Path(base_dir or "."), fmt)
    return parsed, audio, text.encode()


async def simulate_call(
    url: str,
    scenario: str | Path | dict[str, Any] | None = None,
    *,
    steps: Sequence[Any] | None = None,
    expect: Sequence[Any] | None = None,
    base_dir: str | Path | None = None,
    content_type: str | None = None,
    speed: float | None = None,
    loss: float | None = None,
    jitter: float | None = None,
    latency: float | None = None,
    seed: int | None = None,
    repeat: int = 1,
    concurrency: int = 1,
    auth_token: str | None = None,
    extra_headers: str | None = None,
) -> SimulatedRun:
    """Run a scenario against `url` `repeat` times (see the module docstring)."""
    import random

    if repeat < 1 or concurrency < 1:
        raise ValueError("repeat and concurrency must be at least 1")
    fmt = MediaFormat.from_content_type(content_type) if content_type else None
    parsed, audio, text = _scenario(scenario, steps, expect, base_dir, fmt)
    chosen = fmt or MediaFormat.from_content_type(parsed.content_type or "audio/x-mulaw;rate=8000")
    net = parsed.network
    impairment = Impairment(
        net.loss if loss is None else loss,
        net.jitter if jitter is None else jitter,
        net.latency if latency is None else latency,
    )
    seed = net.seed if seed is None else seed
    if impairment.active and seed is None:
        seed = random.SystemRandom().randrange(2**31)
    configs = scenario_calls(
        url, parsed, audio, chosen, repeat=repeat, impairment=impairment, seed=seed,
        auth_token=auth_token, speed=speed, extra_headers=extra_headers,
    )  # fmt: skip
    results = await run_scenarios(configs, concurrency)
    parts = [text, *(audio[k] for k in sorted(audio))]
    identity = identity_of(parts, chosen, seed, impairment, parsed.name)
    reports = [r.report for r in results]
    # as simulate: a refused call (1008) or a barge-in never cleared fails the run
    summary = summarize_run(reports, results, (), identity, parsed, failures(reports))
    return SimulatedRun(summary, results)


def simulate_call_sync(url: str, scenario: Any = None, **options: Any) -> SimulatedRun:
    """`simulate_call` from synchronous code (in a worker thread if a loop already runs here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(simulate_call(url, scenario, **options))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, simulate_call(url, scenario, **options)).result()


__all__ = ["Network", "SimulatedRun", "simulate_call", "simulate_call_sync"]
