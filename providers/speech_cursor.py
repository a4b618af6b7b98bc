"""Where a stream-pair vendor is in the audio the gateway sent it, read from what comes back.

A vendor such as Simli queues the audio it is sent and plays it, in order and in real time, in the audio stream it
returns (silence when its queue is empty). The cursor keeps the queue the gateway sent (segment by segment) and
walks it as the vendor's audio comes back, so every returned frame is labelled with the segment its voice belongs
to; the room publisher's playout tracker then turns those labels into heard positions, as for any framed provider.

When the vendor starts playing is read from the audio itself: the cursor anchors on the first returned frame with
voice in it, aligned with the first voiced sample of what it queued (the silence before it was played, as silence,
while the cursor waited). The vendor's own "speaking" signal anchors a queue with no voice at all, and a vendor that
never plays what it was sent is anchored after `anchor_timeout_s`, so no segment can wait forever. Once anchored the
cursor advances with the returned audio, one input sample per `output_rate / input_rate` output samples; when it
catches up with what was sent before the segment ended, the agent's audio ran out (an underrun) and the cursor
anchors again on the next voice.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

VOICE_LEVEL = 300  # int16 peak above which a stretch of audio carries voice (about -40 dBFS)


@dataclass(slots=True)
class _Queued:
    segment_id: int  # 0: keep-alive silence, part of no segment
    samples: int  # input samples left to play; 0 with `end` marks the segment's end
    voiced_at: int | None  # index of the first voiced sample among those left, if any
    end: bool = False


@dataclass(frozen=True, slots=True)
class FrameLabel:
    """The segment one returned frame of audio belongs to, in output samples."""

    segment_id: int = 0
    samples: int = 0
    done: bool = False
    underrun: bool = False
    cut: bool = False  # with done: the segment was cut short (it finishes interrupted)


IDLE = FrameLabel()


def _loud(pcm: np.ndarray) -> np.ndarray:
    return (pcm > VOICE_LEVEL) | (pcm < -VOICE_LEVEL)  # no int32 copy, no overflow at -32768


def first_voiced(pcm: np.ndarray) -> int | None:
    """Index of the first sample of int16 audio louder than VOICE_LEVEL, or None."""
    loud = np.flatnonzero(_loud(pcm))
    return int(loud[0]) if loud.size else None


def is_voiced(pcm: np.ndarray) -> bool:
    """True if int16 audio has voice in it."""
    return bool(pcm.size) and max(int(pcm.max()), -int(pcm.min())) > VOICE_LEVEL


class SpeechCursor:
    """The queue of audio sent to one vendor, walked by the audio it returns. All methods are O(1) amortised."""

    def __init__(self, input_rate: int, output_rate: int, *, anchor_timeout_s: float = 1.5) -> None:
        self._in_rate, self._out_rate = input_rate, output_rate
        self._queue: deque[_Queued] = deque()
        self._anchored = False
        # input samples due but not yet taken, times output_rate (exact: fractions of a sample, and what a segment
        # boundary left over, carry to the next frame)
        self._credit = 0
        self._speaking = False  # the vendor's own signal
        self._waiting_since: float | None = None  # when the queue got audio while not anchored
        self._anchor_timeout_s = anchor_timeout_s
        self._pending: deque[FrameLabel] = deque()  # segment ends to be carried by the next frames

    @property
    def idle(self) -> bool:
        """Nothing queued: a good moment to switch vendor sessions."""
        return not self._queue and not self._pending

    # -- what the gateway sent ----------------------------------------------------------------------------------
    def sent_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        """Mono int16 audio of a segment (or keep-alive silence, segment 0) went to the vendor."""
        if not pcm.size:
            return
        tail = self._queue[-1] if self._queue else None
        if tail is not None and tail.segment_id == segment_id and not tail.end:
            if tail.voiced_at is None:  # only until the segment's first voice: then nothing is scanned any more
                voiced = first_voiced(pcm)
                if voiced is not None:
                    tail.voiced_at = tail.samples + voiced
            tail.samples += pcm.size
        else:
            self._queue.append(_Queued(segment_id, pcm.size, first_voiced(pcm)))
        if not self._anchored and self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def ended(self, segment_id: int) -> None:
        """No more audio for the segment."""
        self._queue.append(_Queued(segment_id, 0, None, end=True))
        if not self._anchored and self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def speaking(self, on: bool) -> None:
        """The vendor said it started (True) or stopped (False) speaking."""
        self._speaking = on

    def clear(self) -> None:
        """An interrupt: the vendor drops its queue, so does the cursor."""
        self._queue.clear()
        self._anchored = False
        self._credit = 0
        self._waiting_since = None

    def cut(self) -> None:
        """The vendor session changes under queued audio: drop it; each segment in it ends, cut short, with one of
        the next frames."""
        for segment_id in dict.fromkeys(item.segment_id for item in self._queue if item.segment_id):
            self._pending.append(FrameLabel(segment_id, 0, done=True, cut=True))
        self.clear()

    def skip(self, output_samples: int, voiced: bool) -> None:
        """Returned audio that will not be heard (dropped to bound latency): walk past it; a segment end in it is
        carried by the next frame."""
        label = self.take(output_samples, voiced)
        if label.done:
            self._pending.append(FrameLabel(label.segment_id, 0, done=True, cut=label.cut))

    # -- what the vendor returned -------------------------------------------------------------------------------
    def take(self, output_samples: int, voiced: bool) -> FrameLabel:
        """Label one returned frame of `output_samples` samples (`voiced`: it carries voice)."""
        if self._pending:
            if self._anchored:  # the vendor played this frame's audio too: it still counts
                self._credit += output_samples * self._in_rate
            return self._pending.popleft()
        queue = self._queue
        if not queue:
            return IDLE
        head = queue[0]
        if head.end and not self._anchored:
            queue.popleft()  # an empty segment, or one whose audio was all played: it ends with this frame
            self._after_pop()
            return FrameLabel(head.segment_id, 0, done=head.segment_id != 0)
        if not self._anchored and not self._anchor(voiced):
            return IDLE
        self._credit += output_samples * self._in_rate
        return self._advance()

    def _anchor(self, voiced: bool) -> bool:
        voiced_at = self._first_voiced_in_queue()
        waited = self._waiting_since is not None and time.monotonic() - self._waiting_since >= self._anchor_timeout_s
        if voiced and voiced_at is not None:
            self._credit = voiced_at * self._out_rate  # the silence before the voice was played while we waited
        elif not ((voiced_at is None and self._speaking) or waited):
            return False
        self._anchored = True
        self._waiting_since = None
        return True

    def _first_voiced_in_queue(self) -> int | None:
        offset = 0
        for item in self._queue:
            if item.voiced_at is not None:
                return offset + item.voiced_at
            offset += item.samples
        return None

    def _advance(self) -> FrameLabel:
        queue = self._queue
        label_segment, label_samples = 0, 0
        while queue:
            head = queue[0]
            if head.segment_id and label_segment and head.segment_id != label_segment:
                break  # the next segment starts with the next frame; the credit carries over
            if head.end:
                queue.popleft()
                self._after_pop()
                if head.segment_id:
                    return self._label(head.segment_id, label_samples, done=True)
                continue
            due = self._credit // self._out_rate
            if due < 1:
                break
            take = min(head.samples, due)
            head.samples -= take
            self._credit -= take * self._out_rate
            if head.voiced_at is not None:
                head.voiced_at = head.voiced_at - take if head.voiced_at >= take else None
            if head.segment_id:
                label_segment = head.segment_id
                label_samples += take
            if head.samples == 0:
                queue.popleft()
                if not queue:  # played all that was sent, and the segment has not ended: the agent is late
                    self._anchored = False
                    self._credit = 0
                    return self._label(label_segment, label_samples, underrun=label_segment != 0)
        return self._label(label_segment, label_samples)

    def _label(self, segment_id: int, input_samples: int, *, done: bool = False, underrun: bool = False
               ) -> FrameLabel:
        return FrameLabel(segment_id, input_samples * self._out_rate // self._in_rate, done=done, underrun=underrun)

    def _after_pop(self) -> None:
        if not self._queue:
            self._anchored = False
            self._credit = 0
            self._waiting_since = None
