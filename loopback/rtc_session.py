"""One participant's WebRTC side: its peer connection(s), SDP negotiation, data channels, subscriptions.

Every transceiver forwards RTP instead of decoding or encoding it (``aiortc_hooks.install``), so a published section
yields a ForwardingReceiver and a subscription sends through a ForwardingSender (``forwarding.Downtrack``).

Two signalling modes, as livekit-server has them:

* single peer connection (``/rtc/v1``): the client always offers. Its offers carry recvonly audio/video
  sections reserved for receiving; a subscribed track is put on a free one (``replaceTrack`` +
  ``direction='sendonly'``) and announced through ``SessionDescription.mid_to_track_id`` in the next answer.
  To get that next offer the server sends ``MediaSectionsRequirement`` (the client adds sections and
  re-offers).
* two peer connections (``/rtc``): the client's publisher PC offers; the server owns a subscriber PC on
  which it offers the subscribed tracks.

A sending section is never reused for another track, so msid/mid mappings never change meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCRtpTransceiver
from aiortc import RTCSessionDescription as AiortcDescription
from livekit.protocol import rtc as proto_rtc

from . import aiortc_hooks
from .aiortc_hooks import ForwardingReceiver
from .forwarding import Downtrack
from .sdp import MediaSection, add_rid_extmaps, parse_sections, parse_trickle

logger = logging.getLogger("loopback")

PUBLISHER = proto_rtc.SignalTarget.PUBLISHER
SUBSCRIBER = proto_rtc.SignalTarget.SUBSCRIBER
DATA_LABELS = ("_reliable", "_lossy")
_MAX_QUEUED_DATA = 256


class PeerConnectionRegistry:
    """Creates every RTCPeerConnection (ICE servers off, max-bundle) and knows which are still open.

    Max-bundle, as libwebrtc clients use: with aiortc's default (balanced) a second section of a kind in a client's
    offer keeps the first one's transport from before BUNDLE is applied, which aiortc then discards, so media on
    it (a second video subscription) never flows.
    """

    def __init__(self) -> None:
        self._open: set[RTCPeerConnection] = set()

    def create(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._open.add(pc)
        return pc

    async def close(self, pc: RTCPeerConnection) -> None:
        try:
            await pc.close()
        finally:
            self._open.discard(pc)
        # aiortc's sender and receiver stop() return once their RTP/RTCP loops have signalled that they exit, a step
        # before those tasks are done, and a part that never started is not stopped at all: end the tasks that are
        # left and wait for them, so a closed connection leaves none behind. An ICE start still under way (its check
        # list completed just before the close) starts the consent checks when it resumes: wait for it first.
        await _ice_starts_done(pc)
        tasks = _media_tasks(pc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self) -> None:
        for pc in list(self._open):
            await self.close(pc)


# aiortc keeps the tasks of its senders and receivers in private (name-mangled) attributes; aioice its consent task
_TASK_ATTRIBUTES = ("_RTCRtpSender__rtp_task", "_RTCRtpSender__rtcp_task", "_RTCRtpReceiver__rtcp_task",
                    "_query_consent_task")


ICE_START_WAIT_S = 5.0  # a closed connection's ICE start resumes at once; a safety net only


async def _ice_starts_done(pc: RTCPeerConnection) -> None:
    """Until every ICE transport's start() (aiortc's private `__start` event) has returned."""
    events = [e for ice in getattr(pc, "_RTCPeerConnection__iceTransports", ())
              if isinstance(e := getattr(ice, "_RTCIceTransport__start", None), asyncio.Event) and not e.is_set()]
    if events:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ICE_START_WAIT_S):
                await asyncio.gather(*(e.wait() for e in events))


def _media_tasks(pc: RTCPeerConnection) -> list[asyncio.Future[None]]:
    """The connection's tasks that have not finished yet: its senders' and receivers' RTP/RTCP loops, and the ICE
    consent checks (aioice starts them when connect() succeeds, which can be after the connection was closed)."""
    parts: list[object] = []
    for transceiver in pc.getTransceivers():
        parts += [transceiver.sender, transceiver.receiver]
    for ice in getattr(pc, "_RTCPeerConnection__iceTransports", ()):
        parts.append(getattr(ice, "_connection", None))
    tasks = []
    for part in parts:
        for name in _TASK_ATTRIBUTES:
            task = getattr(part, name, None)
            if isinstance(task, asyncio.Future) and not task.done():
                tasks.append(task)
        if isinstance(part, ForwardingReceiver | aiortc_hooks.ForwardingSender):
            tasks += part.pending_tasks()
    return tasks


@dataclass
class Subscription:
    track_sid: str
    publisher_sid: str
    stream_id: str  # the msid stream id: "PA_xxx|TR_xxx", or "PA_xxx|<stream>" to share one with other tracks
    kind: str
    downtrack: Downtrack
    mid: str | None = None
    transceiver: RTCRtpTransceiver | None = None


@dataclass
class PublishedSection:
    """A section the client started sending on: its mid, the msid track id (the AddTrack cid), its receiver and
    the codec negotiated first for it."""

    mid: str
    cid: str
    kind: str
    receiver: ForwardingReceiver
    mime_type: str


@dataclass
class OfferResult:
    answer: proto_rtc.SessionDescription
    published: list[PublishedSection] = field(default_factory=list)
    unpublished_mids: list[str] = field(default_factory=list)


class RtcSession:
    def __init__(
        self,
        *,
        name: str,
        single_pc: bool,
        registry: PeerConnectionRegistry,
        send_signal: Callable[[proto_rtc.SignalResponse], None],
        on_data: Callable[[str, bytes], None],
        on_connection_state: Callable[[str], None],
    ) -> None:
        self.name = name
        self.single_pc = single_pc
        self._registry = registry
        self._send_signal = send_signal
        self._on_data = on_data
        self._on_connection_state = on_connection_state
        self._lock = asyncio.Lock()
        self._closed = False
        self._pub_pc: RTCPeerConnection | None = None
        self._sub_pc: RTCPeerConnection | None = None
        self._channels: dict[str, RTCDataChannel] = {}
        self._queued_data: dict[str, list[bytes]] = {}
        self._publishing: dict[str, str] = {}  # mid -> cid, sections the client currently sends on
        self._used_mids: set[str] = set()  # sections ever sent or received on: never reused
        self._subs: dict[str, Subscription] = {}
        self._pending_subs: list[Subscription] = []
        self._to_request: list[Subscription] = []  # new subscriptions the client has not been asked for yet
        self._answered = False
        self._early_candidates: dict[int, list[str]] = {PUBLISHER: [], SUBSCRIBER: []}
        self._primary: dict[int, tuple[str, int]] = {}
        self._sub_negotiating = False
        self._sub_renegotiate = False

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscribed_track_sids(self) -> list[str]:
        return sorted(self._subs)

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        return dict(self._subs)

    @property
    def subscriber_sdp(self) -> str:
        """The last SDP this server sent about the sections the client receives on (its answer with one peer
        connection, its offer on the subscriber connection otherwise)."""
        pc = self._pub_pc if self.single_pc else self._sub_pc
        description = pc.localDescription if pc is not None else None
        return description.sdp if description is not None else ""

    @property
    def peer_connection_count(self) -> int:
        return sum(pc is not None for pc in (self._pub_pc, self._sub_pc))

    # ------------------------------------------------------------------ peer connections
    def _ensure_pub_pc(self) -> RTCPeerConnection:
        if self._pub_pc is None:
            pc = self._registry.create()
            self._pub_pc = pc

            @pc.on("datachannel")
            def on_datachannel(channel: RTCDataChannel) -> None:
                self._add_channel(channel)

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if not self._closed:
                    self._on_connection_state(pc.connectionState)

        return self._pub_pc

    def _ensure_sub_pc(self) -> RTCPeerConnection:
        if self._sub_pc is None:
            self._sub_pc = self._registry.create()
        return self._sub_pc

    def _add_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label
        self._channels[label] = channel

        @channel.on("message")
        def on_message(message: Any) -> None:
            if isinstance(message, bytes) and not self._closed:
                self._on_data(label, message)

        @channel.on("open")
        def on_open() -> None:
            self._flush_data(label)

        if channel.readyState == "open":
            self._flush_data(label)

    # ------------------------------------------------------------------ data
    def send_data(self, label: str, payload: bytes) -> None:
        """Send on the client's own data channel with that label (queued until it opens)."""
        if self._closed:
            return
        if label not in DATA_LABELS:
            label = "_reliable"
        channel = self._channels.get(label)
        if channel is not None and channel.readyState == "open":
            channel.send(payload)
            return
        queue = self._queued_data.setdefault(label, [])
        if len(queue) < _MAX_QUEUED_DATA:
            queue.append(payload)

    def _flush_data(self, label: str) -> None:
        channel = self._channels.get(label)
        queue = self._queued_data.pop(label, [])
        if channel is None or channel.readyState != "open":
            if queue:
                self._queued_data[label] = queue
            return
        for payload in queue:
            channel.send(payload)

    # ------------------------------------------------------------------ client offers (publisher PC)
    async def handle_offer(self, sdp: str) -> OfferResult:
        async with self._lock:
            if self._closed:
                raise ConnectionError("session closed")
            pc = self._ensure_pub_pc()
            sections = parse_sections(sdp)
            if sections:
                self._primary[PUBLISHER] = (sections[0].mid, 0)
            await pc.setRemoteDescription(AiortcDescription(sdp=sdp, type="offer"))
            for new in pc.getTransceivers():  # before anything awaits: see aiortc_hooks.install
                aiortc_hooks.install(new)
            await self._flush_candidates(PUBLISHER)
            result = OfferResult(answer=proto_rtc.SessionDescription(type="answer"))
            sending = {s.mid: s for s in sections if s.kind in ("audio", "video") and s.sends}
            for mid, section in sending.items():
                if mid in self._publishing:
                    continue
                transceiver = self._transceiver(pc, mid)
                if transceiver is None:
                    continue
                _, receiver = aiortc_hooks.forwarding_parts(transceiver)
                codecs = aiortc_hooks.negotiated_codecs(transceiver)
                self._used_mids.add(mid)
                result.published.append(
                    PublishedSection(
                        mid, section.msid_track or "", section.kind, receiver, codecs[0].mimeType if codecs else ""
                    )
                )
            result.unpublished_mids = [mid for mid in self._publishing if mid not in sending]
            self._publishing = {p.mid: p.cid for p in result.published} | {
                mid: cid for mid, cid in self._publishing.items() if mid in sending
            }
            if self.single_pc:
                self._assign_pending(pc, sections)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            result.answer.sdp = add_rid_extmaps(pc.localDescription.sdp, sdp)
            for sub in self._subs.values():
                if sub.mid is not None:
                    result.answer.mid_to_track_id[sub.mid] = sub.track_sid
            self._answered = True
            if self.single_pc:
                self._request_sections(self._pending_subs)
            return result

    def _transceiver(self, pc: RTCPeerConnection, mid: str) -> RTCRtpTransceiver | None:
        return next((t for t in pc.getTransceivers() if t.mid == mid), None)

    def _assign_pending(self, pc: RTCPeerConnection, sections: list[MediaSection]) -> None:
        free = [
            s
            for s in sections
            if s.kind in ("audio", "video") and s.direction == "recvonly" and s.mid not in self._used_mids
        ]
        for sub in list(self._pending_subs):
            section = next((s for s in free if s.kind == sub.kind), None)
            if section is None:
                continue
            transceiver = self._transceiver(pc, section.mid)
            if transceiver is None:
                continue
            free.remove(section)
            self._used_mids.add(section.mid)
            self._attach(transceiver, sub)
            sub.mid = section.mid
            self._pending_subs.remove(sub)

    @staticmethod
    def _attach(transceiver: RTCRtpTransceiver, sub: Subscription) -> None:
        sender, _ = aiortc_hooks.forwarding_parts(transceiver)
        # The client matches a received track by its msid: the stream id names the publisher ("PA_xxx|..."),
        # the track id is the track sid.
        sender.set_msid(sub.stream_id, sub.track_sid)
        sub.downtrack.attach(sender)
        transceiver.direction = "sendonly"
        sub.transceiver = transceiver

    def _request_new_sections(self) -> None:
        subs, self._to_request = self._to_request, []
        if not self._closed:
            self._request_sections([sub for sub in subs if sub in self._pending_subs])

    def _request_sections(self, subs: list[Subscription]) -> None:
        audios = sum(1 for s in subs if s.kind == "audio")
        videos = sum(1 for s in subs if s.kind == "video")
        if audios or videos:
            self._send_signal(
                proto_rtc.SignalResponse(
                    media_sections_requirement=proto_rtc.MediaSectionsRequirement(num_audios=audios, num_videos=videos)
                )
            )

    # ------------------------------------------------------------------ subscriptions
    async def subscribe(self, track_sid: str, publisher_sid: str, stream_id: str, downtrack: Downtrack) -> bool:
        async with self._lock:
            if self._closed or track_sid in self._subs:
                downtrack.end()
                return False
            sub = Subscription(track_sid, publisher_sid, stream_id, downtrack.kind, downtrack)
            self._subs[track_sid] = sub
            if self.single_pc:
                self._pending_subs.append(sub)
                if self._answered:
                    # Only a new client offer can carry the new direction: ask for one. Subscriptions made
                    # together (a participant publishing audio and video in one offer) share one request, so the
                    # client renegotiates once.
                    if not self._to_request:
                        asyncio.get_running_loop().call_soon(self._request_new_sections)
                    self._to_request.append(sub)
            else:
                pc = self._ensure_sub_pc()
                transceiver = pc.addTransceiver(downtrack.kind, direction="sendonly")
                aiortc_hooks.install(transceiver)
                self._attach(transceiver, sub)
                await self._negotiate_subscriber_locked()
            return True

    async def unsubscribe(self, track_sid: str) -> None:
        async with self._lock:
            sub = self._subs.pop(track_sid, None)
            if sub is None:
                return
            sub.downtrack.end()
            if sub in self._pending_subs:
                self._pending_subs.remove(sub)
            if sub.transceiver is not None:
                sub.transceiver.direction = "inactive"
            if not self.single_pc and not self._closed and sub.transceiver is not None:
                await self._negotiate_subscriber_locked()

    async def _negotiate_subscriber_locked(self) -> None:
        pc = self._sub_pc
        if pc is None or self._closed:
            return
        if self._sub_negotiating:
            self._sub_renegotiate = True
            return
        self._sub_negotiating = True
        self._sub_renegotiate = False
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        sdp = pc.localDescription.sdp
        sections = parse_sections(sdp)
        if sections:
            self._primary[SUBSCRIBER] = (sections[0].mid, 0)
        self._send_signal(proto_rtc.SignalResponse(offer=proto_rtc.SessionDescription(type="offer", sdp=sdp)))

    async def handle_answer(self, sdp: str) -> None:
        """The client's answer to a subscriber-PC offer (``/rtc`` mode only)."""
        async with self._lock:
            pc = self._sub_pc
            # an answer is only valid while our offer is pending: a late one (the client is leaving and its
            # connection is already closed) is dropped
            if pc is None or self._closed or not self._sub_negotiating or pc.signalingState != "have-local-offer":
                return
            await pc.setRemoteDescription(AiortcDescription(sdp=sdp, type="answer"))
            await self._flush_candidates(SUBSCRIBER)
            self._sub_negotiating = False
            if self._sub_renegotiate:
                await self._negotiate_subscriber_locked()

    # ------------------------------------------------------------------ ICE
    async def add_candidate(self, target: int, candidate_init: str) -> None:
        async with self._lock:
            if self._closed:
                return
            if self.single_pc:
                target = PUBLISHER
            pc = self._pub_pc if target == PUBLISHER else self._sub_pc
            if pc is None or pc.remoteDescription is None:
                self._early_candidates[target].append(candidate_init)
                return
            await self._add_candidate(pc, target, candidate_init)

    async def _flush_candidates(self, target: int) -> None:
        pc = self._pub_pc if target == PUBLISHER else self._sub_pc
        queued, self._early_candidates[target] = self._early_candidates[target], []
        if pc is not None:
            for candidate_init in queued:
                await self._add_candidate(pc, target, candidate_init)

    async def _add_candidate(self, pc: RTCPeerConnection, target: int, candidate_init: str) -> None:
        candidate = parse_trickle(candidate_init)
        if candidate is None:
            return
        # Everything is bundled onto the first section's transport.
        primary = self._primary.get(target)
        if primary is not None:
            candidate.sdpMid, candidate.sdpMLineIndex = primary
        try:
            await pc.addIceCandidate(candidate)
        except Exception:  # a bad candidate must not end the session
            logger.debug("%s: ignoring ICE candidate %r", self.name, candidate_init, exc_info=True)

    # ------------------------------------------------------------------ close
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs.values():
            sub.downtrack.end()
        self._subs.clear()
        self._pending_subs.clear()
        self._queued_data.clear()
        self._channels.clear()
        for pc in (self._sub_pc, self._pub_pc):
            if pc is not None:
                await self._registry.close(pc)
