"""One gateway session's Simli avatar: the agent's audio to Simli, Simli's audio and video back as frames.

The session owns the current Simli link and the framer its media flows into. It keeps Simli's idle timer from
firing while the agent's stream is open (a little silence when nothing was sent for a while), and renews the Simli
session before Simli's `max_session_length` ends it: a new link is started ahead of the cap and swapped in at the
first moment nothing is queued, so the avatar never leaves the room. If no quiet moment comes before the cap is
near, the swap cuts what was queued (those segments finish interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from providers.base import AvatarFrame, PcmFormat, ProviderError, ProviderSession, VideoSpec
from providers.simli.link import SimliLink
from providers.simli.settings import SIMLI_INPUT, SIMLI_OUTPUT, SimliOptions
from providers.speech_cursor import SpeechCursor
from providers.stream_pair import StreamPairFramer

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[SimliLink]]
KEEPALIVE_S = 0.1  # silence sent to keep Simli's idle timer from firing
BOOTSTRAP_S = 0.1875  # silence sent after a start, so Simli's idle video flows at once


def renewal_times(max_session_length: float) -> tuple[float, float]:
    """(start the next Simli session at, swap it in by) seconds after a Simli session started."""
    margin = min(20.0, max_session_length / 4)
    return max_session_length - 2 * margin, max_session_length - margin / 2


class SimliSession(ProviderSession):
    """A running Simli avatar."""

    def __init__(self, link: SimliLink, connect: Connect, options: SimliOptions, video: VideoSpec) -> None:
        self._connect = connect
        self._options = options
        self._video = video
        self._cursor = SpeechCursor(SIMLI_INPUT.sample_rate, SIMLI_OUTPUT.sample_rate)
        self._framer = StreamPairFramer(SIMLI_OUTPUT, video, self._cursor)
        self._link = link
        self._link_started = time.monotonic()
        self._spare: SimliLink | None = None
        self._attached = False
        self._last_sent = time.monotonic()
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.renewals = 0
        self._quiet = asyncio.Event()  # set when a frame leaves with nothing queued at Simli
        self._plug(link)

    @classmethod
    async def open(cls, connect: Connect, options: SimliOptions, video: VideoSpec) -> SimliSession:
        """Start the first Simli session; its background tasks start only once it is fully set up."""
        link = await connect()
        session = cls(link, connect, options, video)
        try:
            await session._send(0, _silence(BOOTSTRAP_S))
        except BaseException:
            await link.stop()
            raise
        session._spawn(session._watch(link), "simli-watch")
        session._spawn(session._keep_alive(), "simli-keepalive")
        session._spawn(session._renew(), "simli-renew")
        return session

    @property
    def input_format(self) -> PcmFormat:
        return SIMLI_INPUT

    @property
    def output_format(self) -> PcmFormat:
        return SIMLI_OUTPUT

    @property
    def video(self) -> VideoSpec:
        return self._video

    def _plug(self, link: SimliLink) -> None:
        link.on_audio = self._framer.add_audio
        link.on_video = self._framer.add_video
        link.on_speaking = self._cursor.speaking

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, link: SimliLink) -> None:
        error = await link.ended
        if link is self._link:
            self._framer.fail(error)

    # -- audio in -----------------------------------------------------------------------------------------------
    async def _send(self, segment_id: int, pcm: np.ndarray) -> None:
        self._cursor.sent_audio(segment_id, pcm)
        self._last_sent = time.monotonic()
        await self._link.send(pcm.tobytes())

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        if pcm.size:
            await self._send(segment_id, pcm)

    async def end_segment(self, segment_id: int) -> None:
        self._cursor.ended(segment_id)

    async def clear(self) -> None:
        self._framer.clear()
        self._link.skip()

    def stream_attached(self, attached: bool) -> None:
        self._attached = attached

    async def _keep_alive(self) -> None:
        """While the agent's stream is open, never let Simli's idle timer run out."""
        every = self._options.max_idle_time / 3
        silence = _silence(KEEPALIVE_S)
        while not self._closed:
            due = self._last_sent + every
            now = time.monotonic()
            if now < due:
                await asyncio.sleep(due - now)
                continue
            if self._attached and self._cursor.idle:
                await self._send(0, silence)
            else:  # no stream to keep alive, or Simli is still playing what it was sent: look again later
                await asyncio.sleep(every)

    # -- renewal ------------------------------------------------------------------------------------------------
    async def _renew(self) -> None:
        while not self._closed:
            start_at, swap_by = renewal_times(self._options.max_session_length)
            await asyncio.sleep(max(0.0, self._link_started + start_at - time.monotonic()))
            try:
                spare = await self._connect()
            except ProviderError as exc:
                log.warning("simli renewal failed to start a session: %s; retrying", exc.reason)
                if time.monotonic() > self._link_started + swap_by:
                    return  # Simli's cap will end the session: the agent is told why
                await asyncio.sleep(1.0)
                continue
            self._spare = spare
            spare.on_audio = spare.on_video = None  # drained, not shown, until it is swapped in
            await spare.send(_silence(BOOTSTRAP_S).tobytes())
            if not await self._hold(spare, self._link_started + swap_by):
                log.warning("simli renewal: the new session ended while it waited; starting another")
                self._spare = None
                await spare.stop()
                continue
            await self._swap(spare)

    async def _hold(self, spare: SimliLink, deadline: float) -> bool:
        """Until nothing is queued at the current Simli session (or `deadline`), keeping the spare's idle timer
        from firing; False if the spare ended meanwhile."""
        every = self._options.max_idle_time / 3
        self._quiet.clear()
        while not self._cursor.idle and not spare.ended.done() and time.monotonic() < deadline:
            quiet = asyncio.ensure_future(self._quiet.wait())
            try:
                await asyncio.wait((quiet, spare.ended), timeout=min(every, max(0.0, deadline - time.monotonic())),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                quiet.cancel()
            if not self._quiet.is_set() and not spare.ended.done():
                await spare.send(_silence(KEEPALIVE_S).tobytes())
        return not spare.ended.done()

    async def _swap(self, spare: SimliLink) -> None:
        old, self._link, self._spare = self._link, spare, None
        self._link_started = time.monotonic()
        self.renewals += 1
        if not self._cursor.idle:
            self._cursor.cut()  # what the old session still had queued will not play
            log.warning("simli renewal cut queued speech: no quiet moment before the cap")
        self._plug(spare)
        old.on_audio = old.on_video = old.on_speaking = None
        self._spawn(self._watch(spare), "simli-watch")
        await old.stop()
        log.info("simli session renewed (%d)", self.renewals)

    # -- frames out ---------------------------------------------------------------------------------------------
    async def frames(self) -> AsyncIterator[AvatarFrame]:
        async for frame in self._framer.frames():
            yield frame
            if self._cursor.idle:
                self._quiet.set()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        links = [link for link in (self._link, self._spare) if link is not None]
        self._spare = None
        for link in links:
            await link.stop()


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(SIMLI_INPUT.sample_rate * seconds), dtype=np.int16)
