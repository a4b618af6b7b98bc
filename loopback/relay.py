"""Fan-out of one received track to any number of subscribers.

aiortc decodes every received track, so a published track is always drained by its fan-out task, even
with no subscriber; each subscriber gets its own bounded queue (oldest frames dropped when it lags) that
its RTCRtpSender re-encodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .tasks import TaskSet

_QUEUE_FRAMES = 30


class RelayTrack(MediaStreamTrack):
    """The track one subscriber's sender reads; ends when the source ends or the subscription is dropped."""

    def __init__(self, kind: str, fanout: TrackFanout) -> None:
        super().__init__()
        self.kind = kind
        self._fanout: TrackFanout | None = fanout
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_QUEUE_FRAMES)

    def push(self, frame: Any) -> None:
        if self.readyState != "live":
            return
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    def end(self) -> None:
        """Make the reader's next ``recv`` raise MediaStreamError (the sender then stops itself)."""
        if self.readyState != "live":
            return
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._detach()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._detach()

    def _detach(self) -> None:
        fanout, self._fanout = self._fanout, None
        if fanout is not None:
            fanout.detach(self)


class TrackFanout:
    """Reads a received track until it ends and copies every frame to the attached RelayTracks."""

    def __init__(self, source: MediaStreamTrack, tasks: TaskSet, name: str) -> None:
        self.kind: str = source.kind
        self._source = source
        self._sinks: set[RelayTrack] = set()
        self.frames_received = 0
        self._ended = asyncio.Event()
        self._task = tasks.spawn(self._run(), name=f"fanout:{name}")

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def subscriber_count(self) -> int:
        return len(self._sinks)

    def subscribe(self) -> RelayTrack:
        sink = RelayTrack(self.kind, self)
        if self.ended:
            sink.end()
        else:
            self._sinks.add(sink)
        return sink

    def detach(self, sink: RelayTrack) -> None:
        self._sinks.discard(sink)

    async def _run(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                self.frames_received += 1
                for sink in list(self._sinks):
                    sink.push(frame)
        except MediaStreamError:
            pass
        finally:
            self._finish()

    def _finish(self) -> None:
        self._ended.set()
        for sink in list(self._sinks):
            sink.end()
        self._sinks.clear()

    async def close(self) -> None:
        """Stop reading the source and end every subscriber's track."""
        if not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._finish()
        self._source.stop()
