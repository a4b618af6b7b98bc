"""The avatar in a real browser: headless Chromium running livekit-client on viewer/browser's page, in the loopback
room. It sees the avatar's frames at their display times and hears its voice as its audio element plays it (and
through a WebAudio tap), the mouth it reads
from the rendered pixels follows the voice it hears, and it sees the avatar leave when the session ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from livekit import rtc

from agent_client import PlaybackFinished
from providers.mock.face import FaceRenderer
from tests.e2e.e2e_helpers import TIMEOUT, Harness, avatar_identity_for, chunked, new_session_id, speech_clip
from viewer.browser import BrowserViewer
from viewer.sync import av_offset

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIP_S = 6.0
SIZE = {"width": 320, "height": 240}


async def test_a_browser_sees_and_hears_the_avatar_and_the_lips_follow_the_voice(e2e: Harness) -> None:
    _, client = await e2e.gateway_client()
    session_id = new_session_id()
    avatar = avatar_identity_for(session_id)
    browser = BrowserViewer(e2e.target.url, e2e.token("browser"), avatar_identity=avatar, **SIZE)
    await browser.open()
    try:
        session = await e2e.start_session(client, session_id, **SIZE)
        await browser.wait_until(lambda: browser.first_video_at is not None and len(browser.rx.audio) >= 50,
                                 TIMEOUT)
        clip = speech_clip(CLIP_S)
        async with client.stream_audio(session.name, sample_rate=16000) as stream:
            for chunk in chunked(clip):
                await stream.send(chunk)
            await stream.end_segment()
            async with asyncio.timeout(TIMEOUT):
                async for event in stream:
                    if isinstance(event, PlaybackFinished):
                        break
        heard_until = browser.rx.audio[-1][0]
        await browser.wait_until(lambda: browser.rx.audio[-1][0] > heard_until + 0.5, TIMEOUT)  # the tail, heard
        offset, corr = av_offset(browser.rx.lips(), browser.rx.audio)
        print(f"\nbrowser: {len(browser.rx.video)} frames, {len(browser.rx.audio)} audio chunks, A/V offset "
              f"{offset * 1000:+.0f} ms (correlation {corr:.2f}), {browser.dropped_frames} frames not seen")
        assert max(v.opening for v in browser.rx.video) > 0.5  # the mouth opened in the rendered pixels
        assert max(level for _, level in browser.rx.audio) > 0.5  # the voice was heard
        assert corr > 0.5, f"the mouth the browser shows does not follow the voice it plays ({corr:.2f})"
        _, tapped = av_offset(browser.rx.lips(), browser.webaudio)  # the same voice, through the WebAudio tap
        assert tapped > 0.5
        await client.end_session(session.name)
        async with asyncio.timeout(TIMEOUT):
            await browser.avatar_left.wait()
    finally:
        await browser.aclose()


async def test_the_page_reads_the_mouth_from_a_simulcast_layer_smaller_than_the_published_size(e2e: Harness) -> None:
    """Stock avatar workers publish simulcast: the page gets a smaller layer than the size the mouth box is given
    for, and must still read the mouth (it scales each frame to the published size)."""
    face = FaceRenderer(640, 480)
    source = rtc.VideoSource(face.width, face.height)
    publisher = rtc.Room()
    browser = BrowserViewer(e2e.target.url, e2e.token("browser"), avatar_identity="simulcast-face",
                            width=face.width, height=face.height)

    def saw(reading: Callable[[float], bool]) -> bool:  # in a frame of a smaller layer
        return any(reading(v.opening) for v in browser.rx.video if v.width < face.width)

    await browser.open()
    try:
        await publisher.connect(e2e.target.url, e2e.token("simulcast-face"))
        track = rtc.LocalVideoTrack.create_video_track("face", source)
        await publisher.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=True))
        shown = 0
        # half a second open, half a second closed, until the page read both from a smaller layer
        async with asyncio.timeout(TIMEOUT):
            while not (saw(lambda opening: opening > 0.8) and saw(lambda opening: opening < 0.2)):
                level = face.levels - 1 if shown // 15 % 2 == 0 else 0
                source.capture_frame(rtc.VideoFrame(face.width, face.height, rtc.VideoBufferType.I420,
                                                    face.frame(level, False)))
                shown += 1
                await asyncio.sleep(1 / 30)  # the frame rate a camera would send at
    finally:
        await browser.aclose()
        await publisher.disconnect()
        await source.aclose()
