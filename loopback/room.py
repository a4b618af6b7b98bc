"""Rooms and what happens in them: joins, replacement, publishing, subscribing, data routing, leaving."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from livekit.protocol import models
from livekit.protocol import rtc as proto_rtc

from .auth import VerifiedToken, can_publish_source
from .forwarding import TrackForwarder
from .ids import room_sid, track_sid
from .participant import Participant, PublishedTrack, SignalSink
from .rtc_session import PeerConnectionRegistry, PublishedSection, RtcSession
from .tasks import TaskSet

logger = logging.getLogger("loopback")

SERVER_VERSION = "1.9.0-loopback"
PROTOCOL_VERSION = 16
_DATA_KINDS = {"_reliable": models.DataPacket.RELIABLE, "_lossy": models.DataPacket.LOSSY}
_SYNC_STREAM_MIN_PROTOCOL = 10  # livekit-server's ProtocolVersion.SupportsSyncStreamID


def stream_from_source(source: models.TrackSource) -> str:
    """livekit-server's StreamFromTrackSource: camera and microphone share a stream, screen share and its audio
    another."""
    if source in (models.TrackSource.CAMERA, models.TrackSource.MICROPHONE):
        return "camera"
    if source in (models.TrackSource.SCREEN_SHARE, models.TrackSource.SCREEN_SHARE_AUDIO):
        return "screen"
    return "unknown"


def stream_id(
    publisher_sid: str, track_sid: str, stream: str, subscriber: models.ClientInfo, *, sync_streams: bool
) -> str:
    """The msid stream id a subscriber gets a track in, as livekit-server picks it (``NewSubscribedTrack``).

    With sync streams (livekit-server's ``room.sync_streams``; on here by default) a participant's tracks of one
    ``TrackInfo.stream`` ("camera" holds camera and microphone) share the stream "PA_xxx|camera", so the
    subscriber's WebRTC stack lip-syncs them; clients before protocol 10 and Firefox get the per-track
    "PA_xxx|TR_xxx". Either way the SDK takes the track sid from the msid track id (or ``mid_to_track_id``).
    """
    if (
        sync_streams
        and stream
        and subscriber.protocol >= _SYNC_STREAM_MIN_PROTOCOL
        and subscriber.browser.lower() != "firefox"
    ):
        return f"{publisher_sid}|{stream}"
    return f"{publisher_sid}|{track_sid}"


class Room:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sid = room_sid()
        self.created_at = time.time()
        self.participants: dict[str, Participant] = {}  # by identity
        self.metadata = ""

    def info(self) -> models.Room:
        visible = [p for p in self.participants.values() if not p.hidden]
        return models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=300,
            departure_timeout=20,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            metadata=self.metadata,
            num_participants=len(visible),
            num_publishers=sum(1 for p in visible if p.tracks),
        )

    def others(self, participant: Participant) -> list[Participant]:
        return [p for p in self.participants.values() if p is not participant and p.connected]


class RoomManager:
    """All rooms of one server, and the handling of every signal request."""

    def __init__(
        self,
        *,
        registry: PeerConnectionRegistry,
        tasks: TaskSet,
        ping_interval: int,
        ping_timeout: int,
        on_change: Callable[[], None],
        sync_streams: bool = True,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        self.sync_streams = sync_streams
        self._registry = registry
        self._tasks = tasks
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_change = on_change
        self._rooms_of: dict[str, Room] = {}  # participant sid -> room
        self.data_packets_forwarded = 0  # packets delivered to a receiver
        self.data_packets_dropped = 0  # packets refused (no can_publish_data, undecodable)

    def room_of(self, participant: Participant) -> Room | None:
        return self._rooms_of.get(participant.sid)

    # ------------------------------------------------------------------ join / leave
    async def join(
        self,
        room_name: str,
        token: VerifiedToken,
        signal: SignalSink,
        *,
        single_pc: bool,
        auto_subscribe: bool,
        client_info: models.ClientInfo,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> Participant:
        """Register a participant and queue its JoinResponse (always its first signal message)."""
        room = self.rooms.get(room_name)
        if room is not None:
            previous = room.participants.get(token.claims.identity)
            if previous is not None:
                # A second join with the same identity replaces the first, as livekit-server does.
                await self.disconnect(previous, models.DUPLICATE_IDENTITY, send_leave=True)
        room = self.rooms.get(room_name)
        if room is None:
            room = Room(room_name)
            self.rooms[room_name] = room
        participant = Participant(
            token=token,
            signal=signal,
            single_pc=single_pc,
            auto_subscribe=auto_subscribe,
            client_info=client_info,
            metadata=metadata,
            attributes=attributes,
        )
        participant.rtc = RtcSession(
            name=f"{room_name}/{participant.identity}",
            single_pc=single_pc,
            registry=self._registry,
            send_signal=signal.send,
            on_data=lambda label, data: self._route_data(participant, label, data),
            on_connection_state=lambda state: self._on_pc_state(participant, state),
        )
        room.participants[participant.identity] = participant
        self._rooms_of[participant.sid] = room
        signal.send(
            proto_rtc.SignalResponse(
                join=proto_rtc.JoinResponse(
                    room=room.info(),
                    participant=participant.info(),
                    other_participants=[p.info() for p in room.others(participant) if not p.hidden],
                    server_version=SERVER_VERSION,
                    subscriber_primary=False,
                    # as livekit-server: a participant that may publish negotiates at once instead of debouncing
                    fast_publish=participant.can_publish,
                    server_region="loopback",
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Standard,
                        version=SERVER_VERSION,
                        protocol=PROTOCOL_VERSION,
                        region="loopback",
                        node_id="loopback",
                    ),
                )
            )
        )
        self._broadcast(room, [participant], exclude=participant)
        self._on_change()
        return participant

    async def start(self, participant: Participant, publisher_offer: str | None) -> None:
        """After the JoinResponse: subscribe to what is already published, answer the join offer."""
        room = self.room_of(participant)
        if room is None:
            return
        if participant.can_subscribe and participant.auto_subscribe:
            for other in room.others(participant):
                for track in list(other.tracks.values()):
                    await self._subscribe(participant, track)
        if publisher_offer:
            await self.handle_offer(participant, publisher_offer)

    async def disconnect(
        self,
        participant: Participant,
        reason: models.DisconnectReason,
        *,
        send_leave: bool,
        action: proto_rtc.LeaveRequest.Action = proto_rtc.LeaveRequest.DISCONNECT,
    ) -> None:
        """Remove a participant: tell the others, stop its tracks and subscriptions, close its connections."""
        room = self._rooms_of.pop(participant.sid, None)
        if room is None:
            return
        participant.state = models.ParticipantInfo.DISCONNECTED
        participant.disconnect_reason = reason
        participant.touch()
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        if send_leave:
            participant.signal.send(
                proto_rtc.SignalResponse(
                    leave=proto_rtc.LeaveRequest(
                        can_reconnect=action != proto_rtc.LeaveRequest.DISCONNECT,
                        reason=reason,
                        action=action,
                    )
                )
            )
        tracks = list(participant.tracks.values())
        participant.tracks.clear()
        participant.pending_tracks.clear()
        participant.tracks_by_mid.clear()
        if not participant.hidden:
            info = participant.info()
            for other in room.participants.values():
                other.signal.send(proto_rtc.SignalResponse(update=proto_rtc.ParticipantUpdate(participants=[info])))
        for track in tracks:
            await self._end_track(room, track)
        if participant.rtc is not None:
            await participant.rtc.close()
        await participant.signal.close()
        if not room.participants and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        self._on_change()

    async def remove_participant(self, room_name: str, identity: str) -> bool:
        room = self.rooms.get(room_name)
        participant = room.participants.get(identity) if room else None
        if participant is None:
            return False
        await self.disconnect(participant, models.PARTICIPANT_REMOVED, send_leave=True)
        return True

    async def delete_room(self, room_name: str) -> bool:
        room = self.rooms.get(room_name)
        if room is None:
            return False
        for participant in list(room.participants.values()):
            await self.disconnect(participant, models.ROOM_DELETED, send_leave=True)
        self.rooms.pop(room_name, None)
        self._on_change()
        return True

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                await self.disconnect(participant, models.SERVER_SHUTDOWN, send_leave=True)
        self.rooms.clear()

    # ------------------------------------------------------------------ updates
    def _broadcast(self, room: Room, changed: list[Participant], exclude: Participant | None = None) -> None:
        """Send ParticipantUpdate about ``changed`` to everyone in the room (hidden ones stay private)."""
        for participant in list(room.participants.values()):
            if participant is exclude or not participant.connected:
                continue
            infos = [p.info() for p in changed if p is participant or not p.hidden]
            if infos:
                participant.signal.send(
                    proto_rtc.SignalResponse(update=proto_rtc.ParticipantUpdate(participants=infos))
                )

    def _changed(self, participant: Participant) -> None:
        room = self.room_of(participant)
        if room is not None:
            participant.touch()
            self._broadcast(room, [participant])
            self._on_change()

    def _on_pc_state(self, participant: Participant, state: str) -> None:
        if state == "connected" and participant.state == models.ParticipantInfo.JOINED:
            participant.state = models.ParticipantInfo.ACTIVE
            self._changed(participant)
        elif state == "failed" and participant.connected:
            self._tasks.spawn(
                self.disconnect(participant, models.CONNECTION_TIMEOUT, send_leave=True),
                name=f"pc-failed:{participant.identity}",
            )

    # ------------------------------------------------------------------ publishing
    def handle_add_track(self, participant: Participant, req: proto_rtc.AddTrackRequest) -> None:
        if not can_publish_source(participant.grants, req.source):
            logger.info("%s: no permission to publish %s", participant.identity, req.cid)
            participant.signal.send(
                proto_rtc.SignalResponse(
                    request_response=proto_rtc.RequestResponse(
                        reason=proto_rtc.RequestResponse.NOT_ALLOWED,
                        message="does not have permission to publish",
                        add_track=req,
                    )
                )
            )
            return
        if req.type not in (models.AUDIO, models.VIDEO):
            participant.signal.send(
                proto_rtc.SignalResponse(
                    request_response=proto_rtc.RequestResponse(
                        reason=proto_rtc.RequestResponse.UNSUPPORTED_TYPE, add_track=req
                    )
                )
            )
            return
        if req.cid in participant.pending_tracks:
            return
        info = models.TrackInfo(
            sid=track_sid(),
            type=req.type,
            name=req.name,
            muted=req.muted,
            width=req.width,
            height=req.height,
            simulcast=len(req.simulcast_codecs) > 0 or len(req.layers) > 1,
            disable_dtx=req.disable_dtx,
            source=req.source,
            layers=req.layers,
            mime_type="audio/opus" if req.type == models.AUDIO else "video/VP8",  # the negotiated one, once known
            stereo=req.stereo,
            disable_red=True,
            encryption=req.encryption,
            stream=req.stream or stream_from_source(req.source),
            audio_features=req.audio_features,
        )
        participant.pending_tracks[req.cid] = PublishedTrack(info=info, cid=req.cid, publisher_sid=participant.sid)
        participant.signal.send(
            proto_rtc.SignalResponse(track_published=proto_rtc.TrackPublishedResponse(cid=req.cid, track=info))
        )

    async def handle_offer(self, participant: Participant, sdp: str) -> None:
        rtc = participant.rtc
        room = self.room_of(participant)
        if rtc is None or room is None:
            return
        result = await rtc.handle_offer(sdp)
        participant.signal.send(proto_rtc.SignalResponse(answer=result.answer))
        for mid in result.unpublished_mids:
            track = participant.tracks_by_mid.pop(mid, None)
            if track is not None and participant.tracks.pop(track.sid, None) is not None:
                participant.signal.send(
                    proto_rtc.SignalResponse(track_unpublished=proto_rtc.TrackUnpublishedResponse(track_sid=track.sid))
                )
                await self._end_track(room, track)
        published = [self._bind_section(participant, section) for section in result.published]
        if result.unpublished_mids or any(published):
            self._changed(participant)
        for track in published:
            if track is None:
                continue
            for other in room.others(participant):
                if other.can_subscribe and other.auto_subscribe:
                    await self._subscribe(other, track)

    def _bind_section(self, participant: Participant, section: PublishedSection) -> PublishedTrack | None:
        track = participant.pending_tracks.pop(section.cid, None)
        if track is None:  # the msid did not name the cid: take the oldest pending track of that kind
            track = next((t for t in participant.pending_tracks.values() if t.kind == section.kind), None)
            if track is not None:
                participant.pending_tracks.pop(track.cid, None)
        if track is None:  # its receiver drops what it gets (no sink)
            logger.warning("%s: media on mid %s without AddTrack; ignoring it", participant.identity, section.mid)
            return None
        track.info.mid = section.mid
        if section.mime_type:
            track.info.mime_type = section.mime_type.lower()
        track.forwarder = TrackForwarder(section.receiver, f"{participant.identity}:{track.sid}")
        participant.tracks[track.sid] = track
        participant.tracks_by_mid[section.mid] = track
        return track

    async def _end_track(self, room: Room, track: PublishedTrack) -> None:
        if track.forwarder is not None:
            await track.forwarder.close()
        for other in list(room.participants.values()):
            if other.rtc is not None:
                await other.rtc.unsubscribe(track.sid)
        self._on_change()

    def handle_mute(self, participant: Participant, req: proto_rtc.MuteTrackRequest) -> None:
        track = participant.tracks.get(req.sid)
        if track is None:
            track = next((t for t in participant.pending_tracks.values() if t.sid == req.sid), None)
        if track is None or track.info.muted == req.muted:
            return
        track.info.muted = req.muted
        if req.sid in participant.tracks:
            self._changed(participant)

    # ------------------------------------------------------------------ subscribing
    async def _subscribe(self, subscriber: Participant, track: PublishedTrack) -> None:
        if track.forwarder is None or subscriber.rtc is None or not subscriber.connected:
            return
        msid_stream = stream_id(
            track.publisher_sid, track.sid, track.info.stream, subscriber.client_info, sync_streams=self.sync_streams
        )
        await subscriber.rtc.subscribe(track.sid, track.publisher_sid, msid_stream, track.forwarder.subscribe())
        # livekit-server tells the publisher its track has a subscriber (LocalTrackPublication.wait_for_subscription,
        # which livekit-agents' AvatarRunner awaits before it publishes video)
        room = self.room_of(subscriber)
        others = room.participants.values() if room is not None else ()
        publisher = next((p for p in others if p.sid == track.publisher_sid), None)
        if publisher is not None and publisher.connected:
            subscribed = proto_rtc.TrackSubscribed(track_sid=track.sid)
            publisher.signal.send(proto_rtc.SignalResponse(track_subscribed=subscribed))
        self._on_change()

    async def handle_subscription(self, participant: Participant, req: proto_rtc.UpdateSubscription) -> None:
        room = self.room_of(participant)
        if room is None or participant.rtc is None:
            return
        sids = set(req.track_sids) | {sid for pt in req.participant_tracks for sid in pt.track_sids}
        for sid in sids:
            if not req.subscribe:
                await participant.rtc.unsubscribe(sid)
                continue
            if not participant.can_subscribe:
                continue
            for other in room.others(participant):
                track = other.tracks.get(sid)
                if track is not None:
                    await self._subscribe(participant, track)
        self._on_change()

    # ------------------------------------------------------------------ metadata
    def handle_update_metadata(self, participant: Participant, req: proto_rtc.UpdateParticipantMetadata) -> None:
        response = proto_rtc.RequestResponse(request_id=req.request_id, update_metadata=req)
        if not participant.grants.can_update_own_metadata:
            response.reason = proto_rtc.RequestResponse.NOT_ALLOWED
            response.message = "does not have permission to update own metadata"
            participant.signal.send(proto_rtc.SignalResponse(request_response=response))
            return
        if req.name:
            participant.name = req.name
        if req.metadata:
            participant.metadata = req.metadata
        for key, value in req.attributes.items():
            if value:
                participant.attributes[key] = value
            else:
                participant.attributes.pop(key, None)
        participant.signal.send(proto_rtc.SignalResponse(request_response=response))
        self._changed(participant)

    # ------------------------------------------------------------------ data
    def _route_data(self, sender: Participant, label: str, raw: bytes) -> None:
        """livekit-server's data forwarding: sender identity asserted, destination_identities honoured."""
        room = self.room_of(sender)
        kind = _DATA_KINDS.get(label)
        if room is None or kind is None or not sender.connected:
            return
        if not sender.can_publish_data:
            self.data_packets_dropped += 1
            self._on_change()
            return
        packet = models.DataPacket()
        try:
            packet.ParseFromString(raw)
        except Exception:
            logger.warning("%s: undecodable data packet", sender.identity)
            self.data_packets_dropped += 1
            return
        packet.kind = kind
        packet.participant_sid = sender.sid
        identity = "" if sender.hidden else sender.identity
        value = packet.WhichOneof("value")
        if value == "user":
            packet.user.participant_sid = "" if sender.hidden else sender.sid
            packet.user.participant_identity = identity
            if packet.destination_identities:
                packet.user.destination_identities[:] = list(packet.destination_identities)
            else:
                packet.destination_identities[:] = list(packet.user.destination_identities)
        elif (value == "transcription" and sender.kind != models.ParticipantInfo.AGENT) or value == "metrics":
            return
        keep_identity = (
            sender.kind == models.ParticipantInfo.AGENT
            and packet.participant_identity
            and packet.participant_identity != sender.identity
            and value in ("chat_message", "stream_header")
        )
        if not keep_identity:
            packet.participant_identity = identity
        destinations = set(packet.destination_identities)
        destination_sids = set(packet.user.destination_sids) if value == "user" else set()
        payload = packet.SerializeToString()
        for other in room.others(sender):
            if (destinations or destination_sids) and (
                other.identity not in destinations and other.sid not in destination_sids
            ):
                continue
            if other.rtc is not None:
                other.rtc.send_data(label, payload)
                self.data_packets_forwarded += 1
