"""`pstream load`'s engine: each step keeps N simulated calls going for a while, back to back.

Every one of the N slots places `simulate`'s call (fresh ids each time) until the step's time
is up; the slots start spread over the first second so the handshakes do not all land at
once. Calls that start during the warm-up are run but not counted: the bot's caches, pools and
autoscaling settle first. The verdict is `ramp`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plivo_stream_cli import metrics
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.errors import PstreamError
from plivo_stream_cli.ramp import Step, call_failure

from .simulator import SimulateConfig, run_call

PROGRESS_SECONDS = 0.5


@dataclass
class Progress:
    """Where a running step is, for a progress display."""

    concurrency: int
    elapsed: float
    seconds: float
    finished: int  # calls ended so far (warm-up ones included)
    failed: int
    in_flight: int


async def run_step(
    template: SimulateConfig,
    concurrency: int,
    seconds: float,
    warm_up: float,
    on_progress: Callable[[Progress], None] | None = None,
) -> Step:
    """Run one step and return it unjudged (see `ramp.judge`)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline, counted_from = began + seconds, began + warm_up
    per_call: list[dict[str, Any]] = []
    failures: list[str] = []
    lateness: list[float] = []
    tally = {"warm": 0, "counted": 0, "finished": 0, "failed": 0, "in_flight": 0}

    async def place() -> tuple[float, str | None, CallReport | None]:
        config = dataclasses.replace(
            template, call_id=str(uuid.uuid4()), stream_id=str(uuid.uuid4())
        )
        started = loop.time()
        tally["in_flight"] += 1
        try:
            report = await run_call(config)
        except PstreamError as exc:
            return started, exc.message, None
        except Exception as exc:  # one broken call must not end the step
            return started, f"{type(exc).__name__}: {exc}", None
        finally:
            tally["in_flight"] -= 1
        return started, call_failure(report), report

    async def slot(index: int) -> None:
        await asyncio.sleep(min(1.0, warm_up, seconds / 4) * index / concurrency)
        while loop.time() < deadline:
            started, error, report = await place()
            tally["finished"] += 1
            tally["failed"] += error is not None
            if started < counted_from:
                tally["warm"] += 1
                continue
            tally["counted"] += 1
            if error is not None:
                failures.append(error)
            if report is not None:
                per_call.append(metrics.call_metrics(report))
                lateness.extend(report.pacing_late_ms)
            if error is not None and report is None:
                await asyncio.sleep(0.2)  # could not connect: do not spin

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            if on_progress is not None:
                on_progress(
                    Progress(
                        concurrency,
                        loop.time() - began,
                        seconds,
                        tally["finished"],
                        tally["failed"],
                        tally["in_flight"],
                    )
                )

    ticker = asyncio.ensure_future(report_progress())
    try:
        await asyncio.gather(*(slot(i) for i in range(concurrency)))
    finally:
        ticker.cancel()
    return Step(
        concurrency=concurrency,
        calls=tally["counted"],
        warm_up_calls=tally["warm"],
        failures=failures,
        per_call=per_call,
        pacing=metrics.pacing(lateness),
    )
