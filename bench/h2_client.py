"""A minimal HTTP/2 gRPC client for load generation: many streams over one connection, one socket write per tick.

grpc.aio spends ~50 µs of Python per message it sends, so a grpc.aio load generator needs more of this machine than
the gateway it measures. This client speaks the same wire protocol (HTTP/2 frames carrying length-prefixed
protobuf messages, RFC 7540 and the gRPC over HTTP/2 spec) with almost no work per message: a tick's messages for
every stream on a connection are framed into one buffer and written at once. It honours the server's flow-control
windows and settings, answers pings, and decodes response headers and trailers with `hpack`. It is for benchmarks
only: no TLS, no retries, no compression.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_ENABLE_PUSH = 0x4, 0x2
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream_id.to_bytes(4, "big") + payload


def grpc_message(body: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _literal(name: bytes, value: bytes) -> bytes:
    # HPACK literal header field without indexing, new name, no Huffman coding (lengths < 127)
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


class GrpcCallError(Exception):
    """A call ended with a non-OK grpc-status (or was reset). `details`: the serialized google.rpc.Status."""

    def __init__(self, status: int, message: str, details: bytes = b"") -> None:
        super().__init__(f"grpc-status {status}: {message}")
        self.status = status
        self.details = details


@dataclass(eq=False)
class H2Stream:
    """One call. `on_message` receives each response message's bytes; `done` resolves with the grpc-status."""

    id: int
    on_message: Callable[[bytes], None] | None
    window: int
    done: asyncio.Future[int]
    pending: deque[tuple[bytes, bool]] = field(default_factory=deque)  # (DATA payload, end) waiting for window
    received: bytearray = field(default_factory=bytearray)
    messages: list[bytes] = field(default_factory=list)
    status: int | None = None
    message: str = ""
    details: bytes = b""  # grpc-status-details-bin


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection to a gRPC server."""

    def __init__(self, authority: str) -> None:
        self._authority = authority.encode()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._decoder = hpack.Decoder()
        self._header_block = bytearray()
        self._header_stream = 0
        self._header_flags = 0
        self._next_id = 1
        self._streams: dict[int, H2Stream] = {}
        self._window = DEFAULT_WINDOW  # connection send window
        self._initial_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self._out: list[bytes] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.blocked_writes = 0  # DATA frames that had to wait for the server's window

    @classmethod
    async def connect(cls, host: str, port: int) -> H2Connection:
        """Open a connection and send the preface and settings."""
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return conn

    # -- sending ------------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        settings = struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0) + struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE,
                                                                              MAX_WINDOW)
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")))

    def open(self, method: str, on_message: Callable[[bytes], None] | None = None,
             metadata: tuple[tuple[str, str], ...] = ()) -> H2Stream:
        """Start a call to `/package.Service/Method`."""
        sid, self._next_id = self._next_id, self._next_id + 2
        block = (b"\x83\x86"  # :method POST, :scheme http (static table)
                 + b"\x04" + bytes((len(method),)) + method.encode()  # :path, indexed name
                 + b"\x01" + bytes((len(self._authority),)) + self._authority  # :authority, indexed name
                 + _literal(b"content-type", b"application/grpc") + _literal(b"te", b"trailers")
                 + b"".join(_literal(k.encode(), v.encode()) for k, v in metadata))
        stream = H2Stream(sid, on_message, self._initial_window, asyncio.get_running_loop().create_future())
        self._streams[sid] = stream
        self._out.append(frame(HEADERS, END_HEADERS, sid, block))
        return stream

    def send(self, stream: H2Stream, payload: bytes, *, end: bool = False) -> None:
        """Queue one DATA frame (a framed gRPC message, or b"" with end=True to half-close)."""
        size = len(payload)
        if stream.pending or size > self._window or size > stream.window:
            stream.pending.append((payload, end))
            self.blocked_writes += 1
            return
        self._window -= size
        stream.window -= size
        self._out.append(frame(DATA, END_STREAM if end else 0, stream.id, payload))

    def reset(self, stream: H2Stream) -> None:
        """Cancel a call (RST_STREAM CANCEL)."""
        if stream.id in self._streams:
            self._out.append(frame(RST_STREAM, 0, stream.id, (8).to_bytes(4, "big")))
            self._finish(stream, 1, "cancelled")

    def flush(self) -> None:
        """Write everything queued in one system call."""
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    async def unary(self, method: str, request: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
        """One unary call: the response message's bytes, or GrpcCallError."""
        stream = self.open(method, None, metadata)
        self.send(stream, grpc_message(request), end=True)
        self.flush()
        status = await stream.done
        if status != 0 or not stream.messages:
            raise GrpcCallError(status, stream.message, stream.details)
        return stream.messages[0]

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.write(frame(GOAWAY, 0, 0, bytes(8)))
            self._transport.close()

    # -- receiving ----------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        offset = 0
        end = len(buf)
        while end - offset >= 9:
            length = int.from_bytes(buf[offset : offset + 3], "big")
            if end - offset < 9 + length:
                break
            kind, flags = buf[offset + 3], buf[offset + 4]
            sid = int.from_bytes(buf[offset + 5 : offset + 9], "big") & MAX_WINDOW
            payload = bytes(buf[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._frame(kind, flags, sid, payload)
        del buf[:offset]
        self.flush()

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == DATA:
            stream = self._streams.get(sid)
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if stream is not None:
                self._data(stream, payload)
                if flags & END_STREAM and stream.status is None:
                    self._finish(stream, 2, "stream ended without trailers")
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
                self._header_stream, self._header_flags = sid, flags
                self._header_block.clear()
            self._header_block += payload
            if flags & END_HEADERS:
                self._headers(self._header_stream, self._header_flags, bytes(self._header_block))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & MAX_WINDOW
            if sid == 0:
                self._window += increment
                for stream in list(self._streams.values()):
                    self._drain(stream)
            elif (stream := self._streams.get(sid)) is not None:
                stream.window += increment
                self._drain(stream)
        elif kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta, self._initial_window = value - self._initial_window, value
                    for stream in self._streams.values():
                        stream.window += delta
            self._out.append(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self._out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM and (stream := self._streams.get(sid)) is not None:
            self._finish(stream, 14, f"stream reset by the server (code {int.from_bytes(payload[:4], 'big')})")
        elif kind == GOAWAY:
            for stream in list(self._streams.values()):
                if stream.id > int.from_bytes(payload[:4], "big") & MAX_WINDOW:
                    self._finish(stream, 14, "connection going away")

    def _data(self, stream: H2Stream, payload: bytes) -> None:
        got = stream.received
        got += payload
        offset = 0
        while len(got) - offset >= 5:
            size = int.from_bytes(got[offset + 1 : offset + 5], "big")
            if len(got) - offset < 5 + size:
                break
            message = bytes(got[offset + 5 : offset + 5 + size])
            offset += 5 + size
            if stream.on_message is not None:
                stream.on_message(message)
            else:
                stream.messages.append(message)
        del got[:offset]

    def _headers(self, sid: int, flags: int, block: bytes) -> None:
        headers = {bytes(k): bytes(v) for k, v in self._decoder.decode(block, raw=True)}
        stream = self._streams.get(sid)
        if stream is None:
            return
        if b"grpc-status" in headers:
            message = urllib.parse.unquote(headers.get(b"grpc-message", b"").decode("utf-8", "replace"))
            details = headers.get(b"grpc-status-details-bin", b"")
            stream.details = base64.b64decode(details + b"=" * (-len(details) % 4))
            self._finish(stream, int(headers[b"grpc-status"]), message)
        elif flags & END_STREAM:
            self._finish(stream, 2, "stream ended without grpc-status")

    def _drain(self, stream: H2Stream) -> None:
        while stream.pending:
            body, end = stream.pending[0]
            if len(body) > self._window or len(body) > stream.window:
                return
            stream.pending.popleft()
            self._window -= len(body)
            stream.window -= len(body)
            self._out.append(frame(DATA, END_STREAM if end else 0, stream.id, body))

    def _finish(self, stream: H2Stream, status: int, message: str) -> None:
        self._streams.pop(stream.id, None)
        stream.status, stream.message = status, message
        if not stream.done.done():
            stream.done.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in list(self._streams.values()):
            self._finish(stream, 14, "connection lost")
        if not self.closed.done():
            self.closed.set_result(None)
