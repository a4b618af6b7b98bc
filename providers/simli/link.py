"""One Simli session on the real simli-ai client, over its P2P transport, drained from start to stop.

The client is made with `retry_count=1`: its own retry switches to its LiveKit transport whenever `livekit.rtc` is
importable (it is, here), so the gateway retries by itself, always P2P. Simli's audio and video iterators are
backed by unbounded aiortc queues: the link drains both continuously from `start` to `stop` and hands every frame
on, so nothing piles up inside the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from simli import SimliClient, SimliConfig
from simli.critical_exceptions import SimliError
from simli.events import SimliEvent
from simli.simli import TransportMode

from providers.base import ProviderError
from providers.sender_clock import SenderClock, watch_sender_reports
from providers.simli import faults
from providers.simli.settings import SIMLI_OUTPUT, SimliSettings
from providers.stream_pair import to_mono

log = logging.getLogger(__name__)

START_ATTEMPTS = 3
RETRY_DELAYS_S = (0.5, 1.0)


class SimliLink:
    """A started Simli session. `ended` resolves with the error once Simli ends it (not when `stop` is called)."""

    def __init__(self, client: SimliClient) -> None:
        self._client = client
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.ended: asyncio.Future[ProviderError] = asyncio.get_running_loop().create_future()
        self.on_audio: Callable[[np.ndarray, float | None], None] | None = None
        self.on_video: Callable[[Any, float | None], None] | None = None
        self._audio_clock = SenderClock(48000)  # Opus's RTP clock
        self._video_clock = SenderClock(90000)
        self.on_speaking: Callable[[bool], None] | None = None

    @classmethod
    async def open(cls, settings: SimliSettings, config: SimliConfig) -> SimliLink:
        """Start a Simli session (P2P, retrying what may be retried); ProviderError if it cannot start."""
        for attempt in range(START_ATTEMPTS):
            client = SimliClient(settings.api_key, config, simliURL=settings.url, retry_count=1,
                                 transport_mode=TransportMode.P2P)
            try:
                await client.start()
            except SimliError as exc:
                await client.stop()
                error = faults.start_failure(exc, config.faceId)
                log.warning("simli start failed (attempt %d of %d): %s", attempt + 1, START_ATTEMPTS, error.reason)
                if not error.retryable or attempt == START_ATTEMPTS - 1:
                    raise error from None
                await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)])
                continue
            except BaseException:
                await client.stop()
                raise
            if client.transport_mode is not TransportMode.P2P:  # never: retry_count=1 makes no retry
                await client.stop()
                raise ProviderError.internal("the Simli client left its P2P transport", "SIMLI_TRANSPORT")
            link = cls(client)
            link._run()
            return link
        raise AssertionError("unreachable")

    def _run(self) -> None:
        client = self._client
        peer = getattr(client.Connection, "LocalPeer", None)  # the P2P transport's aiortc peer connection
        for receiver in peer.getReceivers() if peer is not None else ():
            kind = getattr(receiver.track, "kind", "")
            if kind in ("audio", "video"):
                watch_sender_reports(receiver, self._audio_clock if kind == "audio" else self._video_clock)
        client.registerEventCallback(SimliEvent.SPEAK, self._speak)
        client.registerEventCallback(SimliEvent.SILENT, self._silent)
        self._spawn(self._drain_audio(), "simli-audio")
        self._spawn(self._drain_video(), "simli-video")

    async def _speak(self) -> None:
        if self.on_speaking is not None:
            self.on_speaking(True)

    async def _silent(self) -> None:
        if self.on_speaking is not None:
            self.on_speaking(False)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_audio(self) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SIMLI_OUTPUT.sample_rate)
        try:
            # 48 kHz asked for: the client hands the decoded frames on as they are, pts (the RTP timestamp) kept
            async for frame in self._client.getAudioStreamIterator(SIMLI_OUTPUT.sample_rate):
                captured = self._audio_clock.captured(frame.pts)
                pcm = to_mono(resampler, frame)
                if self.on_audio is not None:
                    self.on_audio(pcm, captured)
        finally:
            self._media_ended()

    async def _drain_video(self) -> None:
        try:
            async for frame in self._client.getVideoStreamIterator("yuva420p"):  # as decoded: no conversion here
                if self.on_video is not None:
                    self.on_video(frame, self._video_clock.captured(frame.pts))
        finally:
            self._media_ended()

    def _media_ended(self) -> None:
        if self._stopping or self.ended.done():
            return
        error = faults.mid_session_failure(self._client.stopReason, self._client.error)
        log.warning("simli session ended: %s", error.reason)
        self.ended.set_result(error)
        self._spawn(self._client.stop(), "simli-stop")  # the WebRTC side may have died with the socket open

    async def send(self, pcm: bytes) -> None:
        """Queue 16 kHz mono PCM16 at Simli. A session that ended drops it (`ended` reports the end)."""
        with contextlib.suppress(SimliError, RuntimeError):
            await self._client.send(pcm)

    def skip(self) -> None:
        """Tell Simli to drop its queue, without waiting for it."""
        self._spawn(self._skip(), "simli-skip")

    async def _skip(self) -> None:
        with contextlib.suppress(SimliError, RuntimeError):
            await self._client.clearBuffer()

    async def stop(self) -> None:
        """Stop the Simli session (idempotent) and every task of the link; `ended` is cancelled if Simli had not
        ended it (nobody is left waiting on a link that was stopped)."""
        self._stopping = True
        if not self.ended.done():
            self.ended.cancel()
        try:
            await self._client.stop()
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                if task.get_name() != "simli-stop":
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
