"""A viewer that users actually use: headless Chromium running livekit-client on a page this package serves.

The page (`static/`) joins the room, reads the avatar's mouth opening from every rendered frame at the time the
compositor shows it (`requestVideoFrameCallback` + canvas), and the voice two ways: as the page's audio element
plays it (the receiver's playout time and the sender's level of every RTP packet, `getSynchronizationSources`:
`rx.audio`) and through a WebAudio tap (an AudioWorklet fed from the remote track, at output time: `webaudio`,
which buffers more than the element does). It posts them to the page's server here; they land on this process's
monotonic clock, so `viewer.sync.av_offset` and every report read them as they read the Python viewer's.
`BrowserViewer.serve_only` serves the page without a browser of ours, for a person who can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from providers.mock.face import mouth_reference
from viewer.participant import Reception, VideoSample

HERE = Path(__file__).parent
STATIC = HERE / "static"
LIVEKIT_CLIENT = HERE / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
PACKETS_FOR_DURATION = 10  # packets whose start-to-start intervals give the packet duration
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # the server must see the page's real address in its ICE candidates, not an mDNS name it cannot resolve
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


def missing() -> str | None:
    """Why no browser viewer can run here (None: it can)."""
    if shutil.which("chromium") is None:
        return "chromium is not installed (Debian package chromium; ./scripts/bootstrap.sh installs it)"
    if not LIVEKIT_CLIENT.is_file():
        return "livekit-client is not installed (npm ci in viewer/browser; ./scripts/bootstrap.sh runs it)"
    return None


class BrowserViewer:
    """One page in one headless Chromium, watching one avatar. Use `async with`, or `open` / `aclose`."""

    def __init__(self, url: str, token: str, *, avatar_identity: str, width: int = 640, height: int = 480) -> None:
        self.avatar_identity = avatar_identity
        self.rx = Reception()
        self.events: list[tuple[float, str]] = []  # (monotonic time, what the page reported)
        self.presented: list[int] = []  # the compositor's presentedFrames at each frame the page saw
        self.webaudio: list[tuple[float, float]] = []  # (end of a 10 ms chunk at the WebAudio output, level)
        self._playout: list[tuple[float, float]] = []  # (playout start of an RTP packet, its level)
        self._packet_s: float | None = None  # packet duration, from the first PACKETS_FOR_DURATION packets
        self.first_video_at: float | None = None
        self.first_frame = asyncio.Event()
        self.avatar_left = asyncio.Event()
        self._query = urllib.parse.urlencode({
            "url": url, "token": token, "avatar": avatar_identity,
            "mouth": json.dumps(mouth_reference(width, height)),
        })
        self._runner: web.AppRunner | None = None
        self._browser: asyncio.subprocess.Process | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._changed = asyncio.Event()
        self.port = 0
        # the page stamps on the epoch clock; this process's reports use the monotonic one
        self._epoch_to_mono = time.monotonic() - time.time()

    @property
    def dropped_frames(self) -> int:
        """Frames the compositor presented that the page never saw (presentedFrames skipped)."""
        return sum(max(0, b - a - 1) for a, b in zip(self.presented, self.presented[1:], strict=False))

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?{self._query}"

    async def serve_only(self) -> None:
        """Serve the page (no browser of ours); a person opens `page_url`."""
        app = web.Application()
        files = {"/": STATIC / "index.html", "/viewer.js": STATIC / "viewer.js",
                 "/level-worklet.js": STATIC / "level-worklet.js", "/livekit-client.umd.js": LIVEKIT_CLIENT}
        for route, path in files.items():
            app.router.add_get(route, _file_handler(path))
        app.router.add_post("/samples", self._samples)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def open(self) -> None:
        """Serve the page and open it in headless Chromium."""
        reason = missing()
        if reason is not None:
            raise RuntimeError(reason)
        await self.serve_only()
        self._profile = tempfile.TemporaryDirectory(prefix="viewer-chromium-")
        chromium = shutil.which("chromium")
        assert chromium is not None
        self._browser = await asyncio.create_subprocess_exec(
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", self.page_url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def __aenter__(self) -> BrowserViewer:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the browser and the page's server."""
        browser, self._browser = self._browser, None
        if browser is not None and browser.returncode is None:
            browser.terminate()
            try:
                async with asyncio.timeout(10):
                    await browser.wait()
            except TimeoutError:
                browser.kill()
                await browser.wait()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._profile is not None:
            with contextlib.suppress(OSError):
                self._profile.cleanup()
            self._profile = None

    async def wait_until(self, predicate: Any, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds, re-checked at every batch the page posts."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- the page's server
    async def _samples(self, request: web.Request) -> web.Response:
        batch = json.loads(await request.text())
        to_mono = self._epoch_to_mono
        rx = self.rx
        for shown_ms, opening, presented, width, height in batch.get("video", []):
            shown = shown_ms / 1000 + to_mono
            rx.video.append(VideoSample(shown, float(opening), int(width), int(height), round(shown * 1e6), shown))
            self.presented.append(int(presented))
            if self.first_video_at is None:
                self.first_video_at = shown
                self.first_frame.set()
        for heard_ms, level in batch.get("audio", []):
            self.webaudio.append((heard_ms / 1000 + to_mono, float(level)))
        for start_ms, level in batch.get("playout", []):
            self._playout.append((start_ms / 1000 + to_mono, float(level)))
        if self._packet_s is None and len(self._playout) >= PACKETS_FOR_DURATION:
            self._packet_s = packet_duration(self._playout)
        if self._packet_s is not None:  # each packet plays until the next starts: its end is start + duration
            done = len(rx.audio)
            rx.audio.extend((t + self._packet_s, level) for t, level in self._playout[done:])
            rx.audio_samples = 480 * len(rx.audio)
        for at_ms, what in batch.get("events", []):
            self.events.append((at_ms / 1000 + to_mono, str(what)))
            if what == "avatar left":
                self.avatar_left.set()
        self._changed.set()
        return web.Response(text="ok")


def packet_duration(starts: list[tuple[float, float]]) -> float:
    """How long a played packet lasts: the median interval between packet starts (the sender's packet duration)."""
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(starts))
    return gaps[len(gaps) // 2]


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)
    return handler
