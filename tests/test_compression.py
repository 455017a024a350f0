"""Compressed request bodies: gzip and zstd are inflated under a hard cap; bombs, broken streams and unknown codings
are refused with the envelope, and nothing is stored from a refused request."""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from functools import cache

import httpx
import orjson
import pytest
import zstandard
from fastapi import Request
from fastapi.testclient import TestClient

from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.http.compression import READ_BYTES, decompress_body, iter_decompressed
from hostatlas.http.errors import HttpError
from hostatlas.settings import Settings
from tests.support import Story, assert_envelope, bearer

KEY_BODY = orjson.dumps({"name": "compressed", "scopes": ["servers:read"]})
SMALL_CAP = 1 << 20
BOMB_BYTES = 64 << 20


def _zstd_unsized(data: bytes) -> bytes:
    """A streamed frame, which does not declare its content size."""
    compressor = zstandard.ZstdCompressor().compressobj()
    return compressor.compress(data) + compressor.flush()


@cache
def _gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([compressor.compress(zeros) for _ in range(BOMB_BYTES >> 20)] + [compressor.flush()])


@cache
def _zstd_bomb() -> bytes:
    compressor = zstandard.ZstdCompressor().compressobj()
    zeros = bytes(1 << 20)
    return b"".join([compressor.compress(zeros) for _ in range(BOMB_BYTES >> 20)] + [compressor.flush()])


BOMBS: dict[str, Callable[[], bytes]] = {"gzip": _gzip_bomb, "zstd": _zstd_bomb}


def _post_key(client: TestClient, story: Story, body: bytes | Iterator[bytes], encoding: str) -> httpx.Response:
    return client.post("/api/v1/api-keys", content=body, headers={
        **bearer(story.admin_a), "Content-Type": "application/json", "Content-Encoding": encoding})


def _key_count(client: TestClient, story: Story) -> int:
    return int(client.get("/api/v1/api-keys", headers=bearer(story.admin_a)).json()["meta"]["total"])


@pytest.fixture
def capped_client(db: Database, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"max_decompressed_bytes": SMALL_CAP}), db=db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress),
    ("GZip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("zstd", zstandard.ZstdCompressor().compress),
    ("zstd", _zstd_unsized),
    ("identity", bytes),
], ids=["gzip", "gzip-mixed-case", "x-gzip", "zstd-sized", "zstd-unsized", "identity"])
def test_compressed_body_creates_the_key(client: TestClient, story: Story, encoding: str,
                                         compress: Callable[[bytes], bytes]) -> None:
    response = _post_key(client, story, compress(KEY_BODY), encoding)
    assert response.status_code == 201, response.text
    assert response.json()["key"].startswith("sk_live_")
    assert _key_count(client, story) == 3


def test_the_app_sees_the_inflated_body_and_its_length(db: Database, settings: Settings) -> None:
    app = create_app(settings, db=db)

    @app.post("/api/v1/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await request.body()
        return {"body": body.decode(), "length": request.headers.get("content-length"),
                "encoding": request.headers.get("content-encoding")}

    with TestClient(app) as client:
        response = client.post("/api/v1/echo", content=zstandard.ZstdCompressor().compress(KEY_BODY),
                               headers={"Content-Type": "application/json", "Content-Encoding": "zstd"})
    assert response.json() == {"body": KEY_BODY.decode(), "length": str(len(KEY_BODY)), "encoding": None}


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_decompression_bomb_is_413_and_stores_nothing(capped_client: TestClient, story: Story,
                                                         encoding: str) -> None:
    error = assert_envelope(_post_key(capped_client, story, BOMBS[encoding](), encoding), 413, "payload_too_large")
    assert str(SMALL_CAP) in str(error["message"])
    assert _key_count(capped_client, story) == 2


def test_the_default_cap_refuses_a_bomb(client: TestClient, story: Story) -> None:
    assert_envelope(_post_key(client, story, _zstd_bomb(), "zstd"), 413, "payload_too_large")
    assert _key_count(client, story) == 2


def test_a_compressed_body_past_max_body_bytes_is_413(client: TestClient, story: Story) -> None:
    noise = gzip.compress(os.urandom(1_200_000), compresslevel=1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(noise), 65536):
            yield noise[start:start + 65536]

    # Streamed without Content-Length: ApiGuard counts the compressed bytes as they arrive.
    assert_envelope(_post_key(client, story, chunks(), "gzip"), 413, "payload_too_large")
    assert _key_count(client, story) == 2


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", gzip.compress(KEY_BODY)[:-6]),
    ("gzip", gzip.compress(KEY_BODY)[:12]),
    ("gzip", b"\x1f\x8b\x08\x00" + b"certainly not deflate data" * 4),
    ("gzip", KEY_BODY),
    ("zstd", zstandard.ZstdCompressor().compress(KEY_BODY)[:-3]),
    ("zstd", _zstd_unsized(KEY_BODY)[:-3]),
    ("zstd", b"\x28\xb5\x2f\xfd" + b"certainly not a frame" * 4),
    ("zstd", KEY_BODY),
], ids=["gzip-truncated", "gzip-header-only", "gzip-garbage", "gzip-plain-json", "zstd-truncated",
        "zstd-unsized-truncated", "zstd-garbage", "zstd-plain-json"])
def test_a_broken_stream_is_400(client: TestClient, story: Story, encoding: str, body: bytes) -> None:
    assert_envelope(_post_key(client, story, body, encoding), 400, "malformed_body")
    assert _key_count(client, story) == 2


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, zstd"])
def test_an_unsupported_encoding_is_415(client: TestClient, story: Story, encoding: str) -> None:
    error = assert_envelope(_post_key(client, story, gzip.compress(KEY_BODY), encoding), 415,
                             "unsupported_content_encoding")
    assert "gzip" in str(error["message"])
    assert _key_count(client, story) == 2


def test_paths_outside_the_api_are_left_alone(client: TestClient) -> None:
    assert client.get("/healthz", headers={"Content-Encoding": "br"}).status_code == 200


# The decoder itself, without HTTP.

@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_bomb_is_refused_after_a_bounded_amount_of_output(encoding: str) -> None:
    bomb = BOMBS[encoding]()
    produced = 0
    with pytest.raises(HttpError) as refused:
        for chunk in iter_decompressed(encoding, bomb, SMALL_CAP):
            assert len(chunk) <= READ_BYTES
            produced += len(chunk)
    assert refused.value.status_code == 413
    # The cap plus the one read that crossed it: the other 63 MiB were never inflated.
    assert produced <= SMALL_CAP < produced + READ_BYTES


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_bomb_never_holds_more_than_the_cap_in_memory(encoding: str) -> None:
    bomb = BOMBS[encoding]()
    tracemalloc.start()
    try:
        with pytest.raises(HttpError):
            decompress_body(encoding, bomb, SMALL_CAP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * SMALL_CAP, peak


def test_concatenated_members_and_frames_are_one_body() -> None:
    assert decompress_body("gzip", gzip.compress(b"ab") + gzip.compress(b"cd"), 1024) == b"abcd"
    compress = zstandard.ZstdCompressor().compress
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    assert decompress_body("zstd", compress(b"ab") + skippable + _zstd_unsized(b"cd"), 1024) == b"abcd"


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_bytes_after_the_last_member_or_frame_are_malformed(encoding: str) -> None:
    compressed = gzip.compress(b"ab") if encoding == "gzip" else zstandard.ZstdCompressor().compress(b"ab")
    with pytest.raises(HttpError) as refused:
        decompress_body(encoding, compressed + b"trailing junk", 1024)
    assert (refused.value.status_code, refused.value.code) == (400, "malformed_body")


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_exactly_the_cap_is_accepted(encoding: str) -> None:
    data = os.urandom(4096)
    compressed = gzip.compress(data) if encoding == "gzip" else _zstd_unsized(data)
    assert decompress_body(encoding, compressed, 4096) == data
    with pytest.raises(HttpError):
        decompress_body(encoding, compressed, 4095)


def test_large_multi_block_zstd_streams_round_trip() -> None:
    data = os.urandom(300_000) + b"a" * 1_000_000 + bytes(range(256)) * 4000
    buffer = io.BytesIO()
    with zstandard.ZstdCompressor(level=19, write_checksum=True).stream_writer(buffer, closefd=False) as writer:
        for start in range(0, len(data), 7777):
            writer.write(data[start:start + 7777])
            writer.flush()
    assert decompress_body("zstd", buffer.getvalue(), len(data)) == data


def test_an_empty_body_stays_empty() -> None:
    assert decompress_body("gzip", b"", 1024) == b""
    assert decompress_body("zstd", b"", 1024) == b""
