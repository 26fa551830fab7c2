"""Plain HTTP on serve's port: /answer (Stream XML), /status (callbacks), their signatures."""

from __future__ import annotations

import asyncio
import itertools
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.webhooks import MAX_BODY_BYTES, BodyTooLarge, ChunkedBody
from plivo_stream_cli.formats import L16_16K
from plivo_stream_cli.signature import sign_headers
from plivo_stream_cli.streamxml import StreamOptions
from tests.conftest import run

TOKEN = "webhook-token"
PUBLIC = "https://pub.example.app"


def http(
    url: str, *, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def call(url: str, **kwargs: Any) -> tuple[int, str, str]:
    return await asyncio.to_thread(http, url, **kwargs)


def stream_element(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    (stream,) = root.iter("Stream")
    return stream


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_answer_returns_stream_xml_pointing_at_the_public_wss_url(method: str) -> None:
    answer = StreamOptions(
        url="",
        bidirectional=True,
        media_format=L16_16K,
        keep_call_alive=True,
        extra_headers={"team": "qa"},
    )
    config = ServeConfig(port=0, public_url=PUBLIC, auth_token=TOKEN, answer=answer)
    form = {"CallUUID": "abc", "From": "+15551234567", "To": "+15557654321"}

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(config) as server:
            server.subscribe(records.append)
            local = f"http://127.0.0.1:{server.port}/answer"
            if method == "POST":
                signed = sign_headers(f"{PUBLIC}/answer", TOKEN, method="POST", params=form)
                status, ctype, body = await call(local, form=form, headers=signed)
            else:
                query = "?" + urllib.parse.urlencode(form)
                signed = sign_headers(f"{PUBLIC}/answer{query}", TOKEN)
                status, ctype, body = await call(local + query, headers=signed)
        assert status == 200 and ctype.startswith("application/xml")
        stream = stream_element(body)
        assert (stream.text or "").strip() == "wss://pub.example.app/stream"
        assert stream.get("bidirectional") == "true"
        assert stream.get("contentType") == "audio/x-l16;rate=16000"
        assert stream.get("keepCallAlive") == "true"
        assert stream.get("extraHeaders") == "team=qa"
        assert stream.get("statusCallbackUrl") == "https://pub.example.app/status"
        (hit,) = [r for r in records if r["event"] == "answer"]
        assert hit["call"] == "abc" and hit["caller"] == "+15551234567"

    run(scenario())


def test_answer_xml_is_accepted_by_plivoxml() -> None:
    from plivo import plivoxml

    async def scenario() -> str:
        async with StreamServer(ServeConfig(port=0, public_url=PUBLIC)) as server:
            return server.answer_xml()

    stream = stream_element(run(scenario()))
    rebuilt = plivoxml.ResponseElement().add(
        plivoxml.StreamElement((stream.text or "").strip(), **_snake(stream.attrib))
    )
    assert "wss://pub.example.app/stream" in rebuilt.to_string()


def _snake(attrs: dict[str, str]) -> dict[str, Any]:
    names = {
        "bidirectional": "bidirectional",
        "audioTrack": "audioTrack",
        "contentType": "contentType",
        "statusCallbackUrl": "statusCallbackUrl",
        "statusCallbackMethod": "statusCallbackMethod",
        "keepCallAlive": "keepCallAlive",
        "streamTimeout": "streamTimeout",
        "extraHeaders": "extraHeaders",
    }
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        out[names[key]] = {"true": True, "false": False}.get(value, value)
    return out


def test_answer_without_public_url_uses_the_host_header() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            status, _, body = await call(f"http://127.0.0.1:{server.port}/answer")
            assert status == 200
            assert (stream_element(body).text or "").strip() == server.local_url

    run(scenario())


@pytest.mark.parametrize("path", ["/answer", "/status"])
def test_webhooks_with_a_bad_signature_are_refused(path: str) -> None:
    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN, public_url=PUBLIC)) as s:
            s.subscribe(records.append)
            url = f"http://127.0.0.1:{s.port}{path}"
            form = {"CallUUID": "abc"}
            wrong = sign_headers(f"{PUBLIC}{path}", "not-the-token", method="POST", params=form)
            assert (await call(url, form=form, headers=wrong))[0] == 403
            assert (await call(url, form=form))[0] == 403
            # The right token but other form fields than those signed: refused too.
            signed = sign_headers(f"{PUBLIC}{path}", TOKEN, method="POST", params=form)
            assert (await call(url, form={"CallUUID": "xyz"}, headers=signed))[0] == 403
        assert [r["event"] for r in records].count("rejected") == 3

    run(scenario())


def test_status_callbacks_reach_the_feed() -> None:
    form = {"Event": "StartStream", "CallUUID": "c1", "StreamID": "s1", "Timestamp": "now"}

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN, public_url=PUBLIC)) as s:
            s.subscribe(records.append)
            signed = sign_headers(f"{PUBLIC}/status", TOKEN, method="POST", params=form)
            status, _, _ = await call(
                f"http://127.0.0.1:{s.port}/status", form=form, headers=signed
            )
            assert status == 200
            query = "?" + urllib.parse.urlencode({"Event": "StopStream", "StreamID": "s1"})
            signed = sign_headers(f"{PUBLIC}/status{query}", TOKEN)
            status, _, _ = await call(f"http://127.0.0.1:{s.port}/status{query}", headers=signed)
            assert status == 200
        statuses = [r for r in records if r["event"] == "status"]
        assert [r["fields"]["Event"] for r in statuses] == ["StartStream", "StopStream"]
        assert statuses[0]["stream"] == "s1" and statuses[0]["fields"]["CallUUID"] == "c1"

    run(scenario())


def test_unknown_paths_and_methods() -> None:
    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            base = f"http://127.0.0.1:{server.port}"
            assert (await call(f"{base}/nope"))[0] == 404
            assert (await call(f"{base}/nope", form={"a": "b"}))[0] == 404
            request = urllib.request.Request(f"{base}/answer", method="PUT", data=b"")
            with pytest.raises(urllib.error.HTTPError) as info:
                await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
            assert info.value.code == 405

    run(scenario())


# ---------------------------------------------------------------- chunked request bodies


def _chunked(pieces: list[bytes], ext: str = "", trailers: str = "") -> bytes:
    out = b"".join(f"{len(p):x}{ext}\r\n".encode() + p + b"\r\n" for p in pieces if p)
    return out + f"0{ext}\r\n{trailers}\r\n".encode()


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=300), max_size=8),
    ext=st.sampled_from(["", ";a=b", '; name="x"']),
    trailers=st.sampled_from(["", "X-Trailer: 1\r\n"]),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_chunked_body_decodes_however_it_is_split(
    pieces: list[bytes], ext: str, trailers: str, cuts: list[int]
) -> None:
    wire = _chunked(pieces, ext, trailers)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    decoder = ChunkedBody(10_000)
    done = [decoder.feed(wire[a:b]) for a, b in itertools.pairwise(points)]
    assert done[-1] and not any(done[:-1]) and bytes(decoder.body) == b"".join(pieces)


def test_chunked_body_matches_h11s_encoder() -> None:
    client = h11.Connection(h11.CLIENT)
    headers = [("Host", "x"), ("Transfer-Encoding", "chunked")]
    client.send(h11.Request(method="POST", target="/status", headers=headers))
    wire = b"".join(
        client.send(event) or b""
        for event in (h11.Data(data=b"Event=Start"), h11.Data(data=b"Stream&"), h11.EndOfMessage())
    )
    decoder = ChunkedBody(1000)
    assert decoder.feed(wire) and bytes(decoder.body) == b"Event=StartStream&"


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", ValueError),
        (b"2\r\nabXY", ValueError),
        (b"-1\r\n", ValueError),
        (b"1" * 5000, ValueError),  # a size line that never ends
        (b"fffffffffffffffff\r\n", ValueError),
        (b"401\r\n", BodyTooLarge),
        (b"400\r\n" + b"a" * 1024 + b"\r\n1\r\n", BodyTooLarge),
    ],
)
def test_chunked_body_refuses_malformed_or_too_large(wire: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        ChunkedBody(1024).feed(wire)


def _post_chunked(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    def pieces() -> Iterator[bytes]:  # a generator body: httpx sends it chunked
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = httpx.post(url, content=pieces(), headers=headers, timeout=10)
    return response.status_code, response.text


def test_signed_chunked_webhook_is_accepted_with_the_same_size_limit() -> None:
    form = {"Event": "StartStream", "CallUUID": "c1", "StreamID": "s1"}
    body = urllib.parse.urlencode(form).encode()

    async def scenario() -> None:
        records: list[dict[str, Any]] = []
        async with StreamServer(ServeConfig(port=0, auth_token=TOKEN, public_url=PUBLIC)) as s:
            s.subscribe(records.append)
            url = f"http://127.0.0.1:{s.port}/status"
            signed = sign_headers(f"{PUBLIC}/status", TOKEN, method="POST", params=form)
            ctype = {"Content-Type": "application/x-www-form-urlencoded"}
            status, _ = await asyncio.to_thread(_post_chunked, url, body, {**signed, **ctype})
            assert status == 200
            wrong = sign_headers(f"{PUBLIC}/status", "nope", method="POST", params=form)
            status, _ = await asyncio.to_thread(_post_chunked, url, body, {**wrong, **ctype})
            assert status == 403
            huge = b"a=" + b"x" * MAX_BODY_BYTES
            status, _ = await asyncio.to_thread(_post_chunked, url, huge, {**signed, **ctype})
            assert status == 413
        (accepted,) = [r for r in records if r["event"] == "status"]
        assert accepted["fields"] == form

    run(scenario())
