"""The gateway's relay participant speaking LiveKit's avatar data-stream protocol to a vendor's worker.

Each segment is one `lk.audio_stream` byte stream to the vendor's identity (attributes `sample_rate`,
`num_channels`; raw PCM16; its trailer ends the segment), `lk.clear_buffer` is the interrupt, and the worker's
`lk.playback_started` / `lk.playback_finished` RPCs come back here, from the vendor's identity only. Every stream
opened is closed (a lost trailer wedges the stock receiver until its 10 s idle timeout).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable

from livekit import rtc

log = logging.getLogger(__name__)

AUDIO_STREAM_TOPIC = "lk.audio_stream"
CLEAR_BUFFER = "lk.clear_buffer"
PLAYBACK_FINISHED = "lk.playback_finished"
PLAYBACK_STARTED = "lk.playback_started"
RPC_TIMEOUT_S = 2.0  # a clear the vendor does not answer in this time is given up (the book finishes anyway)


class AudioRelay:
    """Streams one session's speech to `vendor_identity` from the relay's `room`."""

    def __init__(self, room: rtc.Room, vendor_identity: str, sample_rate: int, *,
                 on_started: Callable[[], None], on_finished: Callable[[float, bool], None]) -> None:
        self._room = room
        self._vendor = vendor_identity
        self._rate = sample_rate
        self._on_started = on_started
        self._on_finished = on_finished
        self._writer: rtc.ByteStreamWriter | None = None
        self._segment = 0
        participant = room.local_participant
        participant.register_rpc_method(PLAYBACK_FINISHED, self._finished)
        participant.register_rpc_method(PLAYBACK_STARTED, self._started)

    def _finished(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self._vendor:
            return "reject"
        try:
            event = json.loads(data.payload)
            position, interrupted = float(event["playback_position"]), bool(event["interrupted"])
        except (ValueError, KeyError, TypeError):
            log.warning("a playback_finished from the vendor could not be read: dropped")
            return "reject"
        self._on_finished(position, interrupted)
        return "ok"

    def _started(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self._vendor:
            return "reject"
        self._on_started()
        return "ok"

    async def write(self, segment_id: int, pcm: bytes) -> None:
        """Stream `pcm` (mono PCM16 at the vendor's rate) as part of `segment_id`."""
        if self._writer is None or self._segment != segment_id:
            await self.close_segment()
            self._writer = await self._room.local_participant.stream_bytes(
                f"AUDIO_{uuid.uuid4().hex[:12]}", topic=AUDIO_STREAM_TOPIC, destination_identities=[self._vendor],
                attributes={"sample_rate": str(self._rate), "num_channels": "1"})
            self._segment = segment_id
        await self._writer.write(pcm)

    async def close_segment(self) -> None:
        """End the current segment's stream (its trailer), if one is open."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await writer.aclose()
            except Exception as exc:  # the room went away: nothing left to end
                log.info("closing an audio stream to the vendor failed: %s", type(exc).__name__)

    async def ask(self, method: str) -> str:
        """Call `method` on the vendor's worker: its answer, or "" if it gave none in time (or refused the
        method)."""
        try:
            return await self._room.local_participant.perform_rpc(
                destination_identity=self._vendor, method=method, payload="", response_timeout=RPC_TIMEOUT_S)
        except rtc.RpcError as exc:
            log.info("the vendor did not answer %s: %s", method, exc.code)
            return ""

    async def clear(self) -> None:
        """The interrupt: tell the vendor to drop what it holds, then end the open stream."""
        await self.ask(CLEAR_BUFFER)
        await self.close_segment()

    def aclose(self) -> None:
        """Stop answering the vendor's RPCs."""
        participant = self._room.local_participant
        for method in (PLAYBACK_FINISHED, PLAYBACK_STARTED):
            with contextlib.suppress(Exception):
                participant.unregister_rpc_method(method)
