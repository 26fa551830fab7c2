"""Signature V3: the protocol.md test vectors, validation, diagnosis, and agreement with the SDK."""

from __future__ import annotations

import string
from urllib.parse import urlencode

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from plivo.utils import signature_v3 as sdk

from plivo_stream_cli import signature
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.signature import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    UnsignableURL,
    compute_v3,
    diagnose,
    http_form,
    new_nonce,
    request_url,
    sign_headers,
    validate_v3,
)

TOKEN = "my_auth_token"
NONCE = "12345678901234567890"
STREAM_SIG = "iWDL9EIFrrFD0sSY8YSqsLndLMLsbzXyLyWrhxHNlJ8="  # GET https://example.com/stream

VECTORS = [
    ("GET", "https://example.com/stream", None, STREAM_SIG),
    (
        "GET",
        "https://example.com/stream?b=2&a=1",
        None,
        "hVAIJGM6ZETr715d77YiqnSzTJiCOccvk+CIpH2SeNY=",
    ),
    (
        "POST",
        "https://example.com/answer",
        {"CallUUID": "abc", "From": "+15551234567", "To": "+15557654321"},
        "qj9kJL8p4OZ/fBEtyOvMISQl6QNLxSlQ+Fqn8f7SdlM=",
    ),
    (
        "POST",
        "https://example.com/answer?x=1&a=b",
        {"CallUUID": "abc", "Digits": "12"},
        "OaUM79x7nzj9yvYBlhH6cQTSQolAPg+cz3RgZ7srBMM=",
    ),
]


@pytest.mark.parametrize(("method", "url", "params", "expected"), VECTORS)
def test_protocol_vectors(
    method: str, url: str, params: dict[str, str] | None, expected: str
) -> None:
    assert compute_v3(url, NONCE, TOKEN, method=method, params=params) == expected
    assert validate_v3(url, NONCE, expected, TOKEN, method=method, params=params)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://example.com/stream", "https://example.com/stream"),
        ("ws://localhost:8080/s?x=1", "http://localhost:8080/s?x=1"),
        ("WSS://Example.com/stream", "https://Example.com/stream"),
        ("https://example.com/ws", "https://example.com/ws"),
        ("http://wss.example.com/", "http://wss.example.com/"),
    ],
)
def test_http_form(url: str, expected: str) -> None:
    assert http_form(url) == expected


def test_websocket_url_is_signed_in_its_https_form() -> None:
    assert compute_v3("wss://example.com/stream", NONCE, TOKEN) == STREAM_SIG
    assert validate_v3("wss://example.com/stream", NONCE, STREAM_SIG, TOKEN)


def test_fragment_dropped_and_port_kept() -> None:
    assert compute_v3("https://example.com/stream#frag", NONCE, TOKEN) == STREAM_SIG
    assert compute_v3("https://example.com:443/stream", NONCE, TOKEN) != STREAM_SIG


def test_header_may_hold_several_signatures() -> None:
    assert validate_v3("https://example.com/stream", NONCE, f"bogus=,{STREAM_SIG}", TOKEN)
    assert validate_v3("https://example.com/stream", NONCE, f"bogus=, {STREAM_SIG} ", TOKEN)
    assert not validate_v3("https://example.com/stream", NONCE, "bogus=,other=", TOKEN)


@pytest.mark.parametrize(
    ("nonce", "header"), [(None, STREAM_SIG), (NONCE, None), ("", ""), (NONCE, "")]
)
def test_missing_headers_fail(nonce: str | None, header: str | None) -> None:
    assert not validate_v3("https://example.com/stream", nonce, header, TOKEN)
    assert diagnose("https://example.com/stream", nonce, header, TOKEN) is None


def test_wrong_token_nonce_or_non_ascii_header_fail() -> None:
    assert not validate_v3("https://example.com/stream", NONCE, STREAM_SIG, "other_token")
    assert not validate_v3("https://example.com/stream", "1" + NONCE, STREAM_SIG, TOKEN)
    assert not validate_v3("https://example.com/stream", NONCE, "sïgnature", TOKEN)


def test_post_values_sorted_per_key_and_method_case_insensitive() -> None:
    a = compute_v3("https://e.com/a", NONCE, TOKEN, method="post", params={"k": ["2", "1"]})
    b = compute_v3("https://e.com/a", NONCE, TOKEN, method="POST", params={"k": ("1", "2")})
    assert a == b


def test_post_without_params_is_signed_like_get() -> None:
    url = "https://example.com/stream?b=2&a=1"
    assert compute_v3(url, NONCE, TOKEN, method="POST") == compute_v3(url, NONCE, TOKEN)


def test_get_params_merge_into_query_and_url_wins() -> None:
    in_url = compute_v3("https://example.com/stream?b=2&a=1", NONCE, TOKEN)
    merged = compute_v3("https://example.com/stream?b=2", NONCE, TOKEN, params={"a": "1"})
    overridden = compute_v3("https://example.com/stream?b=2&a=1", NONCE, TOKEN, params={"a": "9"})
    assert in_url == merged == overridden


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/stream", "https:///nohost"])
def test_non_http_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="full URL"):
        compute_v3(url, NONCE, TOKEN)


def test_unknown_method_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="GET and POST"):
        compute_v3("https://example.com/", NONCE, TOKEN, method="PUT")


def test_new_nonce_is_twenty_random_digits() -> None:
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(n) == 20 and n.isdigit() for n in nonces)


def test_sign_headers() -> None:
    assert sign_headers("wss://example.com/stream", TOKEN, nonce=NONCE) == {
        SIGNATURE_HEADER: STREAM_SIG,
        NONCE_HEADER: NONCE,
    }
    fresh = sign_headers(
        "https://example.com/cb", TOKEN, method="POST", params={"Event": "StartStream"}
    )
    assert validate_v3(
        "https://example.com/cb",
        fresh[NONCE_HEADER],
        fresh[SIGNATURE_HEADER],
        TOKEN,
        method="POST",
        params={"Event": "StartStream"},
    )


def _sig(url: str) -> str:
    return compute_v3(url, NONCE, TOKEN)


@pytest.mark.parametrize(
    ("checked", "signed", "kwargs"),
    [
        ("http://example.com/stream", "https://example.com/stream", {}),  # scheme
        (
            "https://localhost/stream",
            "https://abc.ngrok.app/stream",
            {"alt_hosts": ["abc.ngrok.app"]},
        ),
        ("https://example.com/stream", "https://example.com:443/stream", {}),  # default port added
        ("http://example.com/stream", "http://example.com:80/stream", {}),
        ("https://example.com/stream", "https://example.com:8443/stream", {"alt_ports": [8443]}),
        ("https://example.com:8080/stream", "https://example.com/stream", {}),  # port dropped
        ("https://example.com/stream", "https://example.com/stream/", {}),  # slash added
        ("https://example.com/stream/", "https://example.com/stream", {}),  # slash removed
        ("https://example.com/stream?token=1", "https://example.com/stream", {}),  # query dropped
        ("https://example.com/stream", "wss://example.com/stream", {}),  # ws spelling
        (
            "http://localhost:8080/stream/",
            "https://abc.ngrok.app/stream",
            {"alt_hosts": ["abc.ngrok.app"]},
        ),
        ("http://[::1]:8080/stream", "https://[::1]/stream", {}),
    ],
)
def test_diagnose_names_the_variant_that_matches(
    checked: str, signed: str, kwargs: dict[str, list[str]]
) -> None:
    # The ws(s) spelling is signed literally here: that is what a misbehaving signer would do.
    signature_value = signature._sign(signed, NONCE, TOKEN)
    assert not validate_v3(checked, NONCE, signature_value, TOKEN)
    assert diagnose(checked, NONCE, signature_value, TOKEN, **kwargs) == signed  # type: ignore[arg-type]


def test_diagnose_accepts_alt_host_with_port_and_ws_url() -> None:
    signed = "https://tunnel.example:8443/stream"
    found = diagnose(
        "ws://127.0.0.1:9000/stream", NONCE, _sig(signed), TOKEN, alt_hosts=["tunnel.example:8443"]
    )
    assert found == signed


def test_diagnose_prefers_fewest_changes_and_gives_up_when_far() -> None:
    assert diagnose("https://example.com/a", NONCE, _sig("https://example.com/b"), TOKEN) is None
    assert diagnose("https://example.com/stream", NONCE, "nope=", TOKEN) is None
    assert diagnose("https://example.com/stream", NONCE, STREAM_SIG, "bad_token") is None


def test_diagnose_with_post_params() -> None:
    params = {"CallUUID": "abc", "Digits": "12"}
    signed = compute_v3("https://example.com/answer", NONCE, TOKEN, method="POST", params=params)
    found = diagnose(
        "http://example.com/answer/", NONCE, signed, TOKEN, method="POST", params=params
    )
    assert found == "https://example.com/answer"


# --- agreement with the plivo SDK (the reference implementation) ------------------------------

_ASCII = string.ascii_letters + string.digits
_hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True)
_paths = st.lists(st.text(alphabet=_ASCII + "-._~%!$&'()*+,;=:@", max_size=8), max_size=4).map(
    lambda parts: "".join("/" + p for p in parts)
)
_pairs = st.lists(
    st.tuples(
        st.text(alphabet=string.printable, max_size=6),
        st.text(alphabet=string.printable, max_size=6),
    ),
    max_size=5,
)
_queries = st.one_of(
    _pairs.map(urlencode),
    st.text(alphabet=string.ascii_letters + string.digits + "=&%+-_.~!$'()*,;:@/? ", max_size=20),
)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
_params = st.dictionaries(_text, st.one_of(_text, st.lists(_text, max_size=3)), max_size=5)


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(st.none() | st.integers(1, 65535))
    netloc = draw(_hosts) + ("" if port is None else f":{port}")
    query = draw(_queries)
    return f"{scheme}://{netloc}{draw(_paths)}{'?' + query if query else ''}"


def _sdk_signature(method: str, url: str, nonce: str, token: str, params: dict[str, object]) -> str:
    copy = {k: list(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        base = (
            sdk.construct_get_url(url, copy)
            if method == "GET"
            else sdk.construct_post_url(url, copy)
        )
    except UnicodeError:
        reject()  # the SDK cannot handle percent-escapes that decode to non-ASCII; we use UTF-8
    signed: bytes = sdk.get_signature_v3(token.encode(), base.decode(), nonce.encode())
    return signed.decode()


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    url=_urls(),
    params=_params,
    nonce=st.text(alphabet=string.digits, min_size=1, max_size=20),
    token=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=32),
)
def test_signature_equals_the_sdk(
    method: str, url: str, params: dict[str, object], nonce: str, token: str
) -> None:
    expected = _sdk_signature(method, url, nonce, token, params)
    ours = compute_v3(url, nonce, token, method=method, params=params)  # type: ignore[arg-type]
    assert ours == expected
    copy = {k: list(v) if isinstance(v, list) else v for k, v in params.items()}
    assert sdk.validate_v3_signature(method, url, nonce, token, ours, params=copy)


# ---------------------------------------------------------------- URLs built from the request

_HOST_PIECES = st.sampled_from(
    ["[", "]", ":", "::1", "[::1]", "[::1", "::1]", "[fe80::1%eth0]", "[zz]", "@", "/", "?",
     "#", " ", "\t", "%", "example.com", "127.0.0.1", ":8080", ":99999", ":", "é", "\\", "\x00"]
)  # fmt: skip
_host_values = st.one_of(
    st.text(max_size=40),
    st.lists(_HOST_PIECES, max_size=6).map("".join),
)


@settings(max_examples=500, deadline=None)
@given(host=_host_values, public=st.sampled_from([None, "https://pub.example.app"]))
def test_request_url_builds_a_signable_url_or_refuses_clearly(
    host: str, public: str | None
) -> None:
    """Whatever the Host header holds, the URL is one `validate_v3` can check, or the request is
    refused with `UnsignableURL`: never another exception (once a 1011 / HTTP 500)."""
    try:
        url = request_url("/stream?a=1", host, public)
    except UnsignableURL as exc:
        assert public is None  # only the Host header can be broken
        assert str(exc)
        return
    assert validate_v3(url, "123", "not-it", "token") is False
    assert diagnose(url, "123", "not-it", "token", alt_hosts=[host]) is None
    assert url.endswith("/stream?a=1")


@pytest.mark.parametrize(
    "host", ["", "[::1", "[::1]x", "[zz]:80", "::1", "host:99999", "host:x", "a b", "h/x", "u@h"]
)
def test_request_url_refuses_an_unusable_host(host: str) -> None:
    with pytest.raises(UnsignableURL):
        request_url("/stream", host)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("example.com", "http://example.com/stream"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080/stream"),
        ("[::1]:8080", "http://[::1]:8080/stream"),
        ("[::1]", "http://[::1]/stream"),
    ],
)
def test_request_url_of_a_usable_host(host: str, url: str) -> None:
    assert request_url("/stream", host) == url
    assert request_url("/stream", "ignored", "wss://pub.example.app") == (
        "https://pub.example.app/stream"
    )


@pytest.mark.parametrize("target", ["", "stream", "*", "http://[::1/stream", "/a b"])
def test_request_url_refuses_a_target_that_is_not_a_path(target: str) -> None:
    with pytest.raises(UnsignableURL):
        request_url(target, "example.com")
