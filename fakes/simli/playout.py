"""One fake Simli session's audio timeline: the play queue and the single clock both outgoing tracks pace from.

Sample ``n`` of the timeline (16 kHz) plays at ``start_time + n / 16000``. The audio track sends samples
``[320 k, 320 (k+1))`` as its frame ``k`` at ``start_time + k * 20 ms``; the video track shows, in its frame ``j`` at
``start_time + j / fps``, the loudness of samples ``[floor(j * 16000 / fps), floor((j+1) * 16000 / fps))``: the
audio whose playout starts with that frame. Whichever track asks first takes the samples off the queue (silence when
it is empty); the other reads the same samples back, so the two tracks always carry the same audio at the same time.

``SPEAK`` fires when audio that is not silent starts to play; ``SILENT`` when the playout passes the last non-silent
sample queued (the queue drained, cleared, or only silence left in it), so a client that pads with silence still gets
its ``SILENT``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .protocol import INPUT_RATE, INPUT_SAMPLE_BYTES

__all__ = ["Playout"]

Int16Array = npt.NDArray[np.int16]
_EMPTY: Int16Array = np.zeros(0, dtype=np.int16)


def _last_voiced(samples: Int16Array, threshold: int) -> int | None:
    """Index of the last sample louder than ``threshold`` (absolute value), None if there is none."""
    voiced = np.flatnonzero((samples > threshold) | (samples < -threshold))
    return int(voiced[-1]) if voiced.size else None


class Playout:
    """The play queue and the timeline; synchronous, driven by the tracks (``take``) and the websocket."""

    def __init__(self, clock: Callable[[], float], *, silence_threshold: int = 0, history: int = INPUT_RATE,
                 on_speak: Callable[[], None] | None = None, on_silent: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self.silence_threshold = silence_threshold
        self._history = history
        self.on_speak = on_speak
        self.on_silent = on_silent
        self.start_time: float | None = None
        # The queue, in "queue coordinates": samples ever enqueued / ever taken off it (played or dropped).
        self._queue: deque[Int16Array] = deque()
        self._carry = b""
        self.enqueued_samples = 0
        self.dequeued_samples = 0
        self._voiced_until = 0  # queue coordinate just after the last non-silent sample enqueued
        # The timeline: samples [self._base, self.end) are kept in self._played.
        self._played: Int16Array = _EMPTY
        self._base = 0
        self.end = 0
        self._cursors: dict[str, int] = {}
        self.speaking = False
        self._speech_ends_at: int | None = None  # timeline index where the queued speech ends
        self.played_samples = 0  # queued samples that were played out
        self.dropped_samples = 0  # queued samples dropped by SKIP / PLAY_IMMEDIATE

    # -- the clock -----------------------------------------------------------------------------------------------
    def origin(self) -> float:
        """The time sample 0 plays at: the first time a track asks (media starts when WebRTC is up)."""
        if self.start_time is None:
            self.start_time = self._clock()
        return self.start_time

    def now(self) -> float:
        return self._clock()

    def first_index(self, rate: float) -> int:
        """The first frame a track running at ``rate`` frames/s sends when it starts now (no catch-up burst)."""
        elapsed = self.now() - self.origin()
        return max(0, math.ceil(elapsed * rate - 1e-9))

    # -- the queue -----------------------------------------------------------------------------------------------
    @property
    def queued_samples(self) -> int:
        return self.enqueued_samples - self.dequeued_samples

    def enqueue(self, pcm: bytes) -> int:
        """Append PCM16 LE mono 16 kHz to the queue (an odd byte waits for the next message); samples added."""
        data = self._carry + pcm
        usable = len(data) - len(data) % INPUT_SAMPLE_BYTES
        self._carry = data[usable:]
        if usable == 0:
            return 0
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        last = _last_voiced(samples, self.silence_threshold)
        if last is not None:
            self._voiced_until = self.enqueued_samples + last + 1
            self._speech_ends_at = None
        self._queue.append(samples)
        self.enqueued_samples += samples.size
        return int(samples.size)

    def clear(self) -> int:
        """Drop everything queued (SKIP); returns the samples dropped."""
        dropped = self.queued_samples
        self._queue.clear()
        self._carry = b""
        self.dequeued_samples = self.enqueued_samples
        self.dropped_samples += dropped
        if self.speaking and self._speech_ends_at is None:
            self._speech_ends_at = self.end
        return dropped

    def play_immediate(self, pcm: bytes) -> int:
        """PLAY_IMMEDIATE: drop the queue, then queue ``pcm``; returns the samples dropped."""
        dropped = self.clear()
        self.enqueue(pcm)
        return dropped

    # -- the timeline ----------------------------------------------------------------------------------------------
    def take(self, consumer: str, start: int, stop: int) -> Int16Array:
        """Timeline samples ``[start, stop)`` for ``consumer`` (a track), taking them off the queue if it is first."""
        if self.speaking and self._speech_ends_at is not None and start >= self._speech_ends_at:
            self.speaking = False
            self._speech_ends_at = None
            if self.on_silent is not None:
                self.on_silent()
        if stop > self.end:
            self._advance(stop)
        self._cursors[consumer] = stop
        out = np.zeros(stop - start, dtype=np.int16)
        lo = max(start, self._base)
        if lo < stop:
            out[lo - start:] = self._played[lo - self._base:stop - self._base]
        self._trim()
        return out

    def release(self, consumer: str) -> None:
        """``consumer`` stopped reading: its position no longer holds samples back."""
        self._cursors.pop(consumer, None)

    def _advance(self, stop: int) -> None:
        need = stop - self.end
        pieces: list[Int16Array] = [self._played]
        taken_from = self.dequeued_samples
        while need > 0 and self._queue:
            head = self._queue[0]
            if head.size <= need:
                piece = self._queue.popleft()
            else:
                piece, self._queue[0] = head[:need], head[need:]
            pieces.append(piece)
            need -= piece.size
            self.dequeued_samples += piece.size
        pulled = self.dequeued_samples - taken_from
        self.played_samples += pulled
        if need > 0:
            pieces.append(np.zeros(need, dtype=np.int16))
        if (pulled and not self.speaking and taken_from < self._voiced_until
                and any(_last_voiced(piece, self.silence_threshold) is not None for piece in pieces[1:])):
            self.speaking = True
            if self.on_speak is not None:
                self.on_speak()
        if self.speaking and self._speech_ends_at is None and self._voiced_until <= self.dequeued_samples:
            # All the speech queued is on the timeline now: it ends where its last voiced sample plays.
            self._speech_ends_at = self.end + max(0, self._voiced_until - taken_from)
        self._played = np.concatenate(pieces)
        self.end = stop

    def _trim(self) -> None:
        keep_from = max(min(self._cursors.values(), default=self.end), self.end - self._history)
        if keep_from > self._base:
            self._played = self._played[keep_from - self._base:]
            self._base = keep_from
