"""A StreamAudio call this worker relays to the worker that owns its session, told when this worker goes away.

The session outlives this worker's shutdown (its owner keeps serving), so the caller is told with `go_away` that
it should finish what it is saying here and open its next stream again: the owner's own `go_away` and this
worker's are one event to the caller, sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from avatar.v1 import audio_stream_pb2 as pb

from gateway.convert import duration
from gateway.forwarding import Forwarder
from gateway.stream_audio_call import GoAwayEvent


class AudioRelay:
    """One relayed StreamAudio call."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder
        self._notices: asyncio.Queue[GoAwayEvent] = asyncio.Queue(maxsize=1)  # one go_away is all a call needs
        self._went_away = False

    def notify(self, event: GoAwayEvent) -> None:
        """This worker is going away: tell the caller (once)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._notices.put_nowait(event)

    async def run(self, first: pb.StreamAudioRequest, requests: AsyncIterator[pb.StreamAudioRequest]) -> None:
        """Relay the call until it ends."""
        await self._forwarder.bidi("StreamAudio", first, requests, self._responses)

    async def _responses(self, call: Any) -> AsyncGenerator[pb.StreamAudioResponse, None]:
        """The owner's responses and this worker's go_away, in the order they happen."""
        reading: asyncio.Future[Any] = asyncio.ensure_future(call.read())
        notice: asyncio.Future[GoAwayEvent] = asyncio.ensure_future(self._notices.get())
        try:
            while True:
                await asyncio.wait((reading, notice), return_when=asyncio.FIRST_COMPLETED)
                if notice.done():
                    event = notice.result()
                    notice = asyncio.ensure_future(self._notices.get())
                    if not self._went_away:
                        self._went_away = True
                        yield pb.StreamAudioResponse(go_away=pb.GoAway(time_left=duration(event.time_left_s)))
                    continue
                response = reading.result()  # the owner's error status raises here
                if response is grpc.aio.EOF:
                    return
                reading = asyncio.ensure_future(call.read())
                if response.WhichOneof("response") == "go_away":
                    if self._went_away:
                        continue
                    self._went_away = True
                yield response
        finally:
            for waiter in (reading, notice):
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                await reading
            with contextlib.suppress(asyncio.CancelledError):
                await notice
