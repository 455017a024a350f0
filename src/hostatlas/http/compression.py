"""Request bodies sent with ``Content-Encoding: gzip`` or ``zstd``, inflated under a hard cap on the output.

The middleware sits inside ApiGuard, which has already capped the compressed bytes, assigned the request id and
stamps its headers on our refusals too. The cap here applies while inflating, a bounded read at a time, so a
decompression bomb is refused after at most ``max_decompressed_bytes + 1`` inflated bytes, whatever it would expand to.

Concatenated gzip members and concatenated zstd frames (skippable frames included) are accepted, as the gzip and
zstd formats define them; bytes after the last complete member or frame make the body malformed. An empty body
stays empty whatever its declared coding.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

import anyio.to_thread
import zstandard
from starlette.types import ASGIApp, Receive, Scope, Send

from hostatlas.http.asgi import read_body, replay_body, send_json
from hostatlas.http.errors import HttpError, envelope

SUPPORTED_CODINGS = ("gzip", "zstd")
# RFC 9110 asks recipients to treat x-gzip as gzip.
CODING_ALIASES = {"x-gzip": "gzip"}
READ_BYTES = 64 * 1024
# The compressed size alone does not bound the work (16 KB of gzip can inflate to 16 MiB, ~80 ms of CPU), so a
# small body starts inflating on the event loop, sparing it the thread hop, and whatever outgrows this output
# budget finishes in a worker thread. Both limits keep the time spent on the loop to a few milliseconds.
INLINE_COMPRESSED_BYTES = 16 * 1024
INLINE_OUTPUT_BYTES = 256 * 1024
REPLACED_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})

ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
ZSTD_RLE_BLOCK = 1
ZSTD_RESERVED_BLOCK = 3


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _malformed(coding: str, reason: str) -> HttpError:
    return HttpError(400, "malformed_body", f"The body is not valid {coding}: {reason}")


def content_coding(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The one coding to undo, or None for identity; HttpError 415 for anything this server cannot undo."""
    tokens = [token.strip().lower() for key, value in headers if key == b"content-encoding"
              for token in value.decode("latin-1").split(",")]
    codings = [CODING_ALIASES.get(token, token) for token in tokens if token not in ("", "identity")]
    if not codings:
        return None
    if len(codings) > 1:
        raise HttpError(415, "unsupported_content_encoding",
                        f"Send at most one Content-Encoding, not {', '.join(codings)}")
    if codings[0] not in SUPPORTED_CODINGS:
        raise HttpError(415, "unsupported_content_encoding",
                        f"Content-Encoding {codings[0]!r} is not supported; send gzip, zstd or identity")
    return codings[0]


def _bounded_reads(stream: _Readable, limit: int) -> Iterator[bytes]:
    """Read until the end or until one byte past the limit, never asking for more than that."""
    room = limit + 1
    while room > 0 and (chunk := stream.read(min(READ_BYTES, room))):
        room -= len(chunk)
        yield chunk


def _gunzip(data: bytes, limit: int) -> Iterator[bytes]:
    # GzipFile inflates through zlib's max_length a buffer at a time, walks concatenated members and checks each
    # member's CRC and length; a truncated stream raises EOFError instead of passing as a short body.
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as stream:
        yield from _bounded_reads(stream, limit)


def _zstd_frame_end(data: bytes, offset: int) -> int:
    """Where the frame starting at offset ends, from its block headers alone; past len(data) if truncated."""
    magic = int.from_bytes(data[offset:offset + 4], "little")
    if magic & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_MAGIC:
        return offset + 8 + int.from_bytes(data[offset + 4:offset + 8], "little")
    if magic != ZSTD_MAGIC:
        raise _malformed("zstd", "unknown frame magic number")
    header = data[offset:offset + 18]
    checksum_bytes = 4 if zstandard.get_frame_parameters(header).has_checksum else 0
    offset += zstandard.frame_header_size(header)
    last_block = False
    while not last_block and offset + 3 <= len(data):
        block = int.from_bytes(data[offset:offset + 3], "little")
        last_block, kind, size = bool(block & 1), (block >> 1) & 3, block >> 3
        if kind == ZSTD_RESERVED_BLOCK:
            raise _malformed("zstd", "reserved block type")
        # An RLE block stores its one repeated byte; its size field is the regenerated size.
        offset += 3 + (1 if kind == ZSTD_RLE_BLOCK else size)
    return offset + checksum_bytes if last_block else len(data) + 1


def _require_whole_zstd_frames(data: bytes) -> None:
    # zstandard's stream_reader treats a frame cut short as a clean end, so completeness is checked up front.
    offset = 0
    while offset < len(data):
        offset = _zstd_frame_end(data, offset)
    if offset != len(data):
        raise _malformed("zstd", "the last frame is incomplete")


def _unzstd(data: bytes, limit: int) -> Iterator[bytes]:
    _require_whole_zstd_frames(data)
    # The reader inflates to the size asked for, so frames that do not declare their content size are bounded too.
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as stream:
        yield from _bounded_reads(stream, limit)


def iter_decompressed(coding: str, data: bytes, limit: int) -> Iterator[bytes]:
    """The inflated body in chunks of at most 64 KiB; stops with HttpError 413 once it passes limit bytes."""
    if not data:
        return
    chunks = _gunzip(data, limit) if coding == "gzip" else _unzstd(data, limit)
    produced = 0
    try:
        for chunk in chunks:
            produced += len(chunk)
            if produced > limit:
                raise HttpError(413, "payload_too_large", f"The decompressed body exceeds {limit} bytes")
            yield chunk
    except EOFError as exc:
        raise _malformed(coding, "the stream is truncated") from exc
    except (OSError, zlib.error, zstandard.ZstdError) as exc:
        raise _malformed(coding, str(exc) or type(exc).__name__) from exc


def decompress_body(coding: str, data: bytes, limit: int) -> bytes:
    """The whole inflated body; HttpError 413 past limit bytes, 400 malformed_body if truncated or corrupt."""
    return b"".join(iter_decompressed(coding, data, limit))


def _take(chunks: Iterator[bytes], budget: int) -> tuple[bytes, bool]:
    """The chunks until budget bytes are reached, and whether that was all of them."""
    taken: list[bytes] = []
    size = 0
    for chunk in chunks:
        taken.append(chunk)
        size += len(chunk)
        if size >= budget:
            return b"".join(taken), False
    return b"".join(taken), True


def _decoded_scope(scope: Scope, size: int) -> Scope:
    headers = [(key, value) for key, value in scope["headers"] if key not in REPLACED_HEADERS]
    headers.append((b"content-length", str(size).encode()))
    # A copy, as ASGI asks, so that the outer middleware keeps seeing the request as it arrived.
    return {**scope, "headers": headers}


async def _send_refusal(send: Send, scope: Scope, error: HttpError) -> None:
    request_id = str(scope.get("state", {}).get("request_id", ""))
    await send_json(send, error.status_code, envelope(error.status_code, error.code, str(error.detail), request_id))


class RequestDecompression:
    """Undo a gzip or zstd Content-Encoding on request bodies under path_prefix, so routes only ever see JSON."""

    def __init__(self, app: ASGIApp, *, max_decompressed_bytes: int, path_prefix: str = "/api/") -> None:
        self.app = app
        self.max_decompressed_bytes = max_decompressed_bytes
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        try:
            decoded = await self._decoded(scope, receive)
        except HttpError as error:
            await _send_refusal(send, scope, error)
            return
        await self.app(*decoded, send)

    async def _decoded(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
        """The request as the app should see it (a client that leaves first: ClientDisconnect, for ApiGuard)."""
        coding = content_coding(scope["headers"])
        if coding is None:
            return scope, receive
        # ApiGuard's receive raises its own 413 once the compressed bytes pass max_body_bytes.
        compressed = await read_body(receive)
        body = await self._inflate(coding, compressed)
        return _decoded_scope(scope, len(body)), replay_body(body, receive)

    async def _inflate(self, coding: str, compressed: bytes) -> bytes:
        chunks = iter_decompressed(coding, compressed, self.max_decompressed_bytes)
        head, finished = b"", False
        if len(compressed) <= INLINE_COMPRESSED_BYTES:
            head, finished = _take(chunks, INLINE_OUTPUT_BYTES)
        if finished:
            return head
        return head + await anyio.to_thread.run_sync(b"".join, chunks)
