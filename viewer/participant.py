"""The viewer: a real LiveKit participant that subscribes to an avatar and measures what a user would get."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from providers import sdk_logs
from providers.mock.face import mouth_opening_i420
from viewer.mp4 import AUDIO_RATE, Mp4Writer
from viewer.sync import envelope_level

AUDIO_TRACK = "avatar_audio"
VIDEO_TRACK = "avatar_video"


@dataclass(slots=True)
class VideoSample:
    """One received frame: arrival time (monotonic s), mouth opening read from its pixels, size, its timestamp, and
    when a renderer shows it (`shown`)."""

    t: float
    opening: float
    width: int
    height: int
    timestamp_us: int
    # libwebrtc stamps a decoded frame with its render time, on this machine's monotonic clock (the one
    # time.monotonic reads), and hands it over before that time; a stamp on another clock falls back to arrival
    shown: float = 0.0


def shown_at(arrival: float, timestamp_us: int) -> float:
    """A frame's render time if its timestamp is one (within RENDER_CLOCK_S of its arrival), else its arrival."""
    render = timestamp_us / 1e6
    return render if abs(render - arrival) < RENDER_CLOCK_S else arrival


RENDER_CLOCK_S = 1.0  # no jitter buffer holds a frame this long: a timestamp this far from arrival is not a render time


@dataclass
class Reception:
    """Everything the viewer measured."""

    video: list[VideoSample] = field(default_factory=list)
    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival of a 10 ms chunk's end, level 0..1)
    audio_samples: int = 0
    stills: list[tuple[float, bytes, int, int]] = field(default_factory=list)  # every 15th frame, for a contact sheet

    def lips(self, since: float = float("-inf"), until: float = float("inf")) -> list[tuple[float, float]]:
        """(time shown, mouth opening) of every frame shown in [since, until): what viewer.sync.av_offset takes."""
        return [(v.shown, v.opening) for v in self.video if since <= v.shown < until]

    def dropped_frames(self, fps: int) -> int:
        """Frames missing between the first and last received frame, from the frames' own timestamps."""
        return sum(missing for _, missing in self.frame_gaps(fps))

    def frame_gaps(self, fps: int) -> list[tuple[float, int]]:
        """(receive time of the frame after the gap, frames missing) for every gap in the frames' timestamps."""
        stamps = [v.timestamp_us for v in self.video]
        if len(stamps) < 2 or any(b <= a for a, b in itertools.pairwise(stamps)):
            stamps = [round(v.t * 1e6) for v in self.video]
        period = 1e6 / fps
        gaps = []
        for i, (a, b) in enumerate(itertools.pairwise(stamps)):
            missing = round((b - a) / period) - 1
            if missing > 0:
                gaps.append((self.video[i + 1].t, missing))
        return gaps


class Viewer:
    """Joins a room, subscribes to one avatar's `avatar_audio` and `avatar_video`, and records what arrives."""

    def __init__(self, url: str, token: str, *, avatar_identity: str, recorder: Mp4Writer | None = None) -> None:
        self._url = url
        self._token = token
        self.avatar_identity = avatar_identity
        self.room = rtc.Room()
        self.recorder = recorder
        self.rx = Reception()
        self.first_video_at: float | None = None
        self.tracks: dict[str, rtc.RemoteTrackPublication] = {}
        self._have_tracks = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: list[rtc.VideoStream | rtc.AudioStream] = []
        self.avatar_left = asyncio.Event()
        self.first_frame = asyncio.Event()

    async def join(self) -> None:
        """Connect (auto-subscribe) and start consuming the avatar's tracks as they come."""
        sdk_logs.install()
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_disconnected", self._on_left)
        # Every subscription, those made while connecting included, comes as a track_subscribed event (the handler is
        # registered before connect). Streams are opened from those events only: a publication's `track` read
        # while the subscription is still being set up can carry a handle the SDK does not know yet ("handle is not
        # a livekit_ffi::server::room::FfiTrack").
        await self.room.connect(self._url, self._token, rtc.RoomOptions(auto_subscribe=True))

    def _on_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.avatar_identity:
            self.avatar_left.set()

    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
                  ) -> None:
        if participant.identity != self.avatar_identity or pub.name in self.tracks:
            return
        self.tracks[pub.name] = pub
        if pub.name == VIDEO_TRACK:
            video = rtc.VideoStream(track, format=rtc.VideoBufferType.I420)
            self._streams.append(video)
            self._spawn(self._video(video))
        elif pub.name == AUDIO_TRACK:
            audio = rtc.AudioStream.from_track(track=track, sample_rate=AUDIO_RATE, num_channels=1)
            self._streams.append(audio)
            self._spawn(self._audio(audio))
        else:
            return
        if {AUDIO_TRACK, VIDEO_TRACK} <= self.tracks.keys():
            self._have_tracks.set()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_tracks(self) -> None:
        """Until both avatar tracks are subscribed."""
        await self._have_tracks.wait()

    async def _video(self, stream: rtc.VideoStream) -> None:
        rx = self.rx
        async for ev in stream:
            now = time.monotonic()
            frame = ev.frame
            data = bytes(frame.data)
            opening = mouth_opening_i420(data, frame.width, frame.height)
            rx.video.append(VideoSample(now, opening, frame.width, frame.height, ev.timestamp_us,
                                        shown_at(now, ev.timestamp_us)))
            if self.first_video_at is None:
                self.first_video_at = now
                self.first_frame.set()
            if len(rx.video) % 15 == 1:
                rx.stills.append((now, data, frame.width, frame.height))
            if self.recorder is not None:
                await asyncio.to_thread(self.recorder.video, now, data, frame.width, frame.height)

    async def _audio(self, stream: rtc.AudioStream) -> None:
        rx = self.rx
        async for ev in stream:
            now = time.monotonic()
            samples = np.frombuffer(ev.frame.data, dtype=np.int16).copy()
            rx.audio.append((now, envelope_level(samples)))
            rx.audio_samples += samples.size
            if self.recorder is not None:
                await asyncio.to_thread(self.recorder.audio, now - samples.size / AUDIO_RATE, samples)

    async def aclose(self) -> None:
        """Stop receiving and leave."""
        for stream in self._streams:
            with contextlib.suppress(Exception):
                await stream.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
