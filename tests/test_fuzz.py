"""Fuzzing a live StreamServer over a real socket with hypothesis-made hostile messages.

Each example is one call: a valid start and five caller frames, a batch of hostile messages
(valid events with fields removed, retyped or oversized; random text and bytes; binary frames;
huge numbers; deep JSON), five more caller frames and a sentinel. The server must not crash or
leak a task exception, must still answer after the batch, and must have recorded every valid
frame (the WAV starts with the frames before the batch and ends with those after it) and
captured every text message.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.recorder import read_capture
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.events import Media, PlayedStream, Start
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run

BATCH = 100  # hostile messages per call
CI_CALLS = 20  # 2,000 messages in CI
LONG_CALLS = 500  # 50,000 with -m slow
SENTINEL = "fuzz-sentinel"
FMT = MULAW_8K
FRAMES = codec.frames(codec.encode(synth.tone(440, 0.2, 8000), FMT), FMT)  # 10 frames
BEFORE, AFTER = FRAMES[:5], FRAMES[5:]

TEMPLATES: list[dict[str, Any]] = [
    json.loads(Start("c1", "s1", "MA1", ("inbound",), FMT, "a=1", 1).to_json()),
    json.loads(Media("s1", "inbound", "1700000000000", b"\xff" * 160, 3, 3).to_json()),
    {"event": "dtmf", "sequenceNumber": 4, "streamId": "s1", "dtmf": {"digit": "5"}},
    {"event": "playedStream", "sequenceNumber": 5, "streamId": "s1", "name": "cp"},
    {"event": "clearedAudio", "sequenceNumber": 6, "streamId": "s1"},
    {"event": "stop", "sequenceNumber": 7, "streamId": "s1"},
    {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000}},
    {"event": "checkpoint", "streamId": "s1", "name": "x"},
    {"event": "clearAudio", "streamId": "s1"},
    {"event": "mystery", "sequenceNumber": 8, "x": {"y": [1, 2]}},
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    # json.dumps escapes the lone surrogate as \ud800: valid JSON that no encoder can print
    st.sampled_from(["", "--5", "\u00b2", "\ud800", "NaN", "../../etc/passwd", "\x1b[31m"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _slots(obj: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a JSON object, depth first."""
    found: list[tuple[Any, Any]] = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in items:
        found.append((obj, key))
        if isinstance(value, dict | list):
            found.extend(_slots(value))
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    msg = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(msg)
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["remove", "retype", "oversize"]))
        if action == "remove":
            del container[key]
        elif action == "retype":
            container[key] = draw(json_values)
        else:
            container[key] = Big(draw(st.integers(60_000, 200_000)))
    return msg


@st.composite
def huge_numbers(draw: st.DrawFn) -> str:
    number = draw(
        st.one_of(
            st.integers(20, 6000).map(lambda n: "9" * n),
            st.sampled_from(["1e400", "-1e400", "1E-400", "-0", "0.0000001", "123456789.987"]),
        )
    )
    field = draw(st.sampled_from(["sequenceNumber", "chunk", "timestamp", "sampleRate"]))
    body = f'{{"track":"inbound","payload":"AAAA","{field}":{number}}}'
    return f'{{"event":"media","sequenceNumber":{number},"media":{body}}}'


@dataclass(frozen=True)
class Big:
    """n characters of base64-valid filler; short to print when hypothesis reports a failure."""

    n: int

    def __str__(self) -> str:
        return "A" * (self.n - self.n % 4)


@dataclass(frozen=True)
class Deep:
    """JSON nested `depth` levels deep."""

    kind: str
    depth: int

    def __str__(self) -> str:
        opened, closed = "[" * self.depth, "]" * self.depth
        if self.kind == "object":
            return '{"a":' * self.depth + "1" + "}" * self.depth
        if self.kind == "in-event":
            return '{"event":"media","media":' + opened + closed + "}"
        return opened + closed


deep_json = st.builds(
    Deep, st.sampled_from(["list", "object", "in-event"]), st.integers(50, 120_000)
)
oversized = st.builds(
    lambda n: {"event": "media", "media": {"payload": Big(n)}}, st.integers(64 * 1024, 400_000)
)
texts = st.text(max_size=300)
literals = st.sampled_from(["", " ", "null", "0", '"x"', "[]", "{}", "{", '{"event":null}'])
binary = st.binary(max_size=400)

hostile = st.one_of(
    mutated_events(),
    mutated_events(),
    mutated_events(),
    huge_numbers(),
    deep_json,
    oversized,
    texts,
    literals,
    binary,
)

FUZZ_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}


Hostile = str | bytes | dict[str, Any] | Big | Deep  # rendered just before sending


def wire(message: Hostile) -> str | bytes:
    if isinstance(message, str | bytes):
        return message
    if isinstance(message, dict):
        return json.dumps(message, allow_nan=True, default=str)
    return str(message)


def _media(seq: int, payload: bytes) -> str:
    return Media("s1", "inbound", str(seq * 20), payload, seq, seq).to_json()


async def _call(server: StreamServer, batch: list[Hostile]) -> int | None:
    """One fuzzed call; returns the close code our side saw."""
    sentinel = asyncio.Event()
    closed = asyncio.Event()

    def watch(record: dict[str, Any]) -> None:
        if record.get("event") == "playedStream" and record.get("name") == SENTINEL:
            sentinel.set()
        elif record.get("event") == "closed":
            closed.set()

    server.subscribe(watch, media=False)
    async with connect(server.local_url, max_size=None) as ws:
        # Read what the server sends (echo), as Plivo does, so its close reaches us.
        reader = asyncio.create_task(_drain(ws))
        await ws.send(Start("c1", "s1", "MA1", ("inbound",), FMT).to_json())
        for seq, frame in enumerate(BEFORE, start=2):
            await ws.send(_media(seq, frame))
        for message in batch:
            await ws.send(wire(message))
        for seq, frame in enumerate(AFTER, start=100):
            await ws.send(_media(seq, frame))
        await ws.send(PlayedStream("s1", SENTINEL).to_json())
        try:
            await asyncio.wait_for(sentinel.wait(), 30)
        except asyncio.TimeoutError:
            raise AssertionError(f"stream stopped answering (closed {ws.close_code})") from None
    await reader
    await asyncio.wait_for(closed.wait(), 30)
    return ws.close_code


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def fuzz_one_call(batch: list[Hostile]) -> None:
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)

        async def scenario() -> int | None:
            asyncio.get_running_loop().set_exception_handler(lambda _, ctx: failures.append(ctx))
            config = ServeConfig(port=0, record_dir=directory, echo=True, stereo=True)
            async with StreamServer(config) as server:
                return await _call(server, batch)

        close_code = run(scenario())
        assert not failures, failures
        assert close_code == 1000
        _check_recording(directory, batch)


def _check_recording(directory: Path, batch: list[Hostile]) -> None:
    (inbound,) = directory.glob("*.inbound.wav")
    with wave.open(str(inbound)) as wav:
        audio = wav.readframes(wav.getnframes())
    assert audio.startswith(codec.decode(b"".join(BEFORE), FMT))
    assert audio.endswith(codec.decode(b"".join(AFTER), FMT))
    (capture,) = directory.glob("*.jsonl")
    received = [line for line in read_capture(capture) if line.direction == "in"]
    texts = sum(not isinstance(m, bytes) for m in batch)
    assert len(received) == 1 + len(BEFORE) + texts + len(AFTER) + 1  # start ... sentinel


batches = st.lists(hostile, min_size=BATCH, max_size=BATCH)


@settings(max_examples=CI_CALLS, **FUZZ_SETTINGS)
@given(batches)
def test_server_survives_2000_hostile_messages(batch: list[Hostile]) -> None:
    fuzz_one_call(batch)


@pytest.mark.slow
@settings(max_examples=LONG_CALLS, **FUZZ_SETTINGS)
@given(batches)
def test_server_survives_50000_hostile_messages(batch: list[Hostile]) -> None:
    fuzz_one_call(batch)


@pytest.mark.parametrize(
    "message",
    [
        '{"event":"media","media":{"payload":"","timestamp":1e999}}',
        '{"event":"media","media":{"payload":"","timestamp":NaN}}',
        '{"event":"media","sequenceNumber":"--5","media":{"payload":""}}',
        '{"event":"dtmf","sequenceNumber":"\u00b2","dtmf":{"digit":"1"}}',
        "[" * 60_000 + "]" * 60_000,
        '{"event":"dtmf","dtmf":{"digit":"\\ud800"}}',
    ],
    ids=["inf-timestamp", "nan-timestamp", "double-minus", "superscript", "deep", "surrogate"],
)
def test_messages_that_once_broke_the_server(message: str) -> None:
    fuzz_one_call([message])
