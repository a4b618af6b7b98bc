"""A fake vendor's avatar worker, built the way room-native vendors build theirs: livekit-agents'
`DataStreamAudioReceiver` (the sender named, or the first agent participant) feeding an `AvatarRunner` whose
`VideoGenerator` is the mock's face."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livekit import rtc
from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioReceiver

from fakes.room_native.face_generator import MockFaceGenerator

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS = 320, 240, 15


class FakeWorker:
    """One vendor session's worker in the room."""

    def __init__(self, url: str, token: str, *, sender: str | None, sample_rate: int, forget_ends: bool) -> None:
        self._url = url
        self._token = token
        self._sender = sender
        self._rate = sample_rate
        self._forget_ends = forget_ends
        self.stop_requested = asyncio.Event()
        self.identity = ""
        self.kicked = False  # left because the room removed it, not because it was stopped

    async def run(self) -> None:
        """Join, play what the receiver gets, until stopped or removed from the room."""
        room = rtc.Room()
        gone = asyncio.Event()
        room.on("disconnected", lambda *_: gone.set())
        await room.connect(self._url, self._token)
        self.identity = room.local_participant.identity
        runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room, sender_identity=self._sender),
                              video_gen=MockFaceGenerator(self._rate, WIDTH, HEIGHT, FPS,
                                                          forget_ends=self._forget_ends, idle_audio=False),
                              options=AvatarOptions(video_width=WIDTH, video_height=HEIGHT, video_fps=FPS,
                                                    audio_sample_rate=self._rate, audio_channels=1))
        try:
            await runner.start()
            stopped = asyncio.ensure_future(self.stop_requested.wait())
            removed = asyncio.ensure_future(gone.wait())
            try:
                await asyncio.wait((stopped, removed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                removed.cancel()
            self.kicked = gone.is_set() and not self.stop_requested.is_set()
        finally:
            with contextlib.suppress(Exception):
                await runner.aclose()
            await room.disconnect()
