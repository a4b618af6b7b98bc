"""The session manager: creates, finds, lists and ends sessions; idempotent StartSession; shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import session_pb2 as pb_session

from gateway import errors, paging, validation
from gateway.caller_limits import CallerLimits
from gateway.config import Caller, GatewayConfig
from gateway.convert import epoch_ns, session_pb
from gateway.directory import Directory, Elsewhere, SoloDirectory, request_key, session_key
from gateway.metrics import GatewayMetrics
from gateway.room_admin import GatewayRoomAdmin
from gateway.room_audio_input import RoomAudioInput
from gateway.session import (
    TERMINAL,
    AudioTransport,
    AvatarSession,
    EndReason,
    Failover,
    SessionEndedWhileStarting,
    SessionParams,
    State,
)
from gateway.tokens import avatar_identity, mint_avatar_token, relay_identity
from providers.base import ProviderAdapter, ProviderError, ProviderFault, RoomSpec, SessionSpec
from providers.pipeline import PipelineParts
from providers.registry import ProviderRegistry
from providers.room_connection import RoomConnection, RoomJoinError

log = logging.getLogger(__name__)

MAX_FALLBACKS = 4


@dataclass(slots=True)
class _Pending:
    fingerprint: str
    owner: str
    future: asyncio.Future[AvatarSession]
    session: str  # the session the request started


class SessionManager:
    """Owns every session of one gateway process."""

    def __init__(self, config: GatewayConfig, registry: ProviderRegistry, directory: Directory | None = None) -> None:
        self.config = config
        self.registry = registry
        self.directory = directory or SoloDirectory()
        self._sessions: dict[str, AvatarSession] = {}
        self._requests: dict[str, _Pending] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._closing = False
        self.metrics = GatewayMetrics()
        self._limits = CallerLimits(config.max_sessions_per_caller, config.starts_per_minute_per_caller)

    # -- lookups ------------------------------------------------------------------------------------------------
    def resolve(self, caller: Caller, name: str, field: str = "name") -> AvatarSession:
        """The session `name` of this process if it is the caller's: INVALID_ARGUMENT, NOT_FOUND. Another caller's
        session is NOT_FOUND exactly as a missing one is (AIP-211: its existence is not for the caller to learn)."""
        validation.session_id_from_name(name, field)
        session = self._sessions.get(name)
        if session is None or session.params.owner != caller.principal:
            raise errors.not_found(name)
        return session

    async def locate(self, caller: Caller, name: str, field: str = "name") -> AvatarSession:
        """`resolve`, or Elsewhere when another worker process owns the session."""
        session_id = validation.session_id_from_name(name, field)
        if name not in self._sessions:
            owner = await self.directory.lookup(session_key(session_id))
            if owner is not None and owner != self.directory.index:
                raise Elsewhere(owner)
        return self.resolve(caller, name, field)

    def list_page(self, caller: Caller, page_size: int, page_token: str, show_ended: bool
                  ) -> tuple[list[pb_session.Session], str]:
        """One page of the caller's sessions in this process, newest first (gateway.paging)."""
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, show_ended)
        rows = [(_list_key(s), s) for s in self._sessions.values()
                if s.params.owner == caller.principal and (show_ended or s.state not in TERMINAL)]
        if after is not None:
            rows = [(key, s) for key, s in rows if key < after]
        rows.sort(key=lambda row: row[0], reverse=True)
        page = [session_pb(s) for _, s in rows[:size]]  # only the page is converted
        return paging.merge([page], size, more=len(rows) > size, show_ended=show_ended)

    def active(self) -> list[AvatarSession]:
        """Sessions that are not terminal."""
        return [s for s in self._sessions.values() if s.state not in TERMINAL]

    # -- start --------------------------------------------------------------------------------------------------
    async def start(self, caller: Caller, req: pb.StartSessionRequest) -> AvatarSession:
        """StartSession: validate, deduplicate by request_id, start, return the ACTIVE session."""
        adapter = self._adapter(caller, req.provider, "provider")
        request_id = validation.check_request_id(req.request_id) if req.request_id else ""
        if request_id:
            pending = self._requests.get(request_id)
            if pending is not None:
                return await self._replay(caller, req, request_id, pending)
        claimed: list[str] = []  # directory keys this call created: given back if it fails before registering
        try:
            if request_id:
                await self._claim(request_key(request_id), claimed, Elsewhere)
                pending = self._requests.get(request_id)  # a twin may have registered while we asked
                if pending is not None:
                    return await self._replay(caller, req, request_id, pending)
            params = self._validate(caller, req, adapter)
            candidates = [(adapter, params), *self._fallbacks(caller, req, params.session_id)]
            if self._closing:
                raise errors.unavailable("the gateway is shutting down", "SHUTTING_DOWN", 1.0)
            if len(self.active()) >= self.config.max_sessions:
                raise errors.resource_exhausted(
                    f"this gateway runs at most {self.config.max_sessions} sessions", "TOO_MANY_SESSIONS",
                    "sessions", {"limit": str(self.config.max_sessions)})
            self._limits.check_sessions(caller.principal, (s.params.owner for s in self.active()))
            self._limits.take_start(caller.principal)
            name = f"sessions/{params.session_id}"

            def exists(_: int = 0) -> errors.GatewayError:
                return errors.already_exists(f"session {name!r} already exists", "SESSION_EXISTS", name)

            old = self._sessions.get(name)
            if old is not None and old.state is State.FAILED and old.end_reason is EndReason.START_FAILED \
                    and old.params.owner == caller.principal:
                del self._sessions[name]  # a failed start made no session: its caller's retry may take the name
                self._ended.pop(name, None)
            if name not in self._sessions:
                await self._claim(session_key(params.session_id), claimed, exists)
            if name in self._sessions:  # here already, or started by a twin while the directory answered
                raise exists()
            if request_id and request_id in self._requests:
                return await self._replay(caller, req, request_id, self._requests[request_id])
        except BaseException:
            for key in claimed:
                self.directory.release(key)
            raise
        future: asyncio.Future[AvatarSession] = asyncio.get_running_loop().create_future()
        if request_id:
            self._requests[request_id] = _Pending(_fingerprint(req), caller.principal, future, name)
        failovers: list[Failover] = []
        for attempt, (adapter, params) in enumerate(candidates):
            session = AvatarSession(params, adapter.info, avatar_identity=avatar_identity(adapter.info.name,
                                                                                            params.session_id))
            session.request_id = request_id
            session.failovers = list(failovers)
            self._sessions[name] = session
            try:
                await self._start_one(session, adapter)
            except Exception as exc:
                failover = _failover(exc, adapter.info.name)
                if failover is None or attempt + 1 == len(candidates) or self._closing:
                    raise self._failed_start(session, adapter, exc, request_id, future) from None
                log.warning("session %s: provider %s did not start (%s); trying %s", name, adapter.info.name,
                            failover.reason, candidates[attempt + 1][0].info.name)
                self.metrics.record_provider_time(adapter.info.name, session.provider_seconds)
                failovers.append(failover)
                continue
            except BaseException as exc:
                raise self._failed_start(session, adapter, exc, request_id, future) from None
            break
        if failovers:  # the first stream hears which providers were passed over
            passed = "; ".join(f"{f.provider}: {f.reason} ({f.detail})" for f in failovers)
            session.notice("PROVIDER_FAILOVER", f"the session runs on {session.params.provider}; did not start: "
                                                f"{passed}")
        future.set_result(session)
        session_ended = asyncio.ensure_future(session.wait_ended())
        session_ended.add_done_callback(lambda _: self._ended_after_start(session))
        return session

    def _ended_after_start(self, session: AvatarSession) -> None:
        self.metrics.record_provider_time(session.params.provider, session.provider_seconds)
        self._remember_ended(session)

    def _adapter(self, caller: Caller, provider: str, field: str) -> ProviderAdapter:
        """The adapter of `provider`, which the request names in `field`, if this caller may use it."""
        if caller.providers and provider not in caller.providers:
            raise errors.permission_denied(f"this caller may not use provider {provider[:64]!r}",
                                           {"provider": provider[:64]})
        if not provider:
            raise errors.invalid_argument(field, "provider is required", "MISSING_FIELD")
        adapter = self.registry.get(provider)
        if adapter is None:
            known = ", ".join(a.info.name for a in self.registry)
            raise errors.invalid_argument(field, f"unknown provider {provider[:64]!r}; known: {known}",
                                          "UNKNOWN_PROVIDER")
        return adapter

    def _fallbacks(self, caller: Caller, req: pb.StartSessionRequest, session_id: str
                   ) -> list[tuple[ProviderAdapter, SessionParams]]:
        """The request's fallback providers, each validated as if it had been asked for itself."""
        if len(req.fallbacks) > MAX_FALLBACKS:
            raise errors.invalid_argument("fallbacks", f"at most {MAX_FALLBACKS} fallbacks", "TOO_MANY_FALLBACKS")
        out = []
        for i, choice in enumerate(req.fallbacks):
            adapter = self._adapter(caller, choice.provider, f"fallbacks[{i}].provider")
            alone = pb.StartSessionRequest()
            alone.CopyFrom(req)
            alone.provider, alone.avatar_id, alone.session_id = choice.provider, choice.avatar_id, session_id
            alone.provider_options.clear()
            alone.provider_options.update(choice.provider_options)
            del alone.fallbacks[:]
            out.append((adapter, self._validate(caller, alone, adapter)))
        return out

    def _failed_start(self, session: AvatarSession, adapter: ProviderAdapter, exc: BaseException, request_id: str,
                      future: asyncio.Future[AvatarSession]) -> BaseException:
        """Release what a failed start holds; the error for the caller."""
        if request_id:
            del self._requests[request_id]  # a failed start frees the id: a retry starts afresh
            self.directory.release(request_key(request_id))
        future.set_exception(exc)
        future.exception()  # retrieved: retries waiting on it re-raise it themselves
        self.metrics.record_provider_time(adapter.info.name, session.provider_seconds)
        self._remember_ended(session)
        if isinstance(exc, ProviderError):
            log.warning("session %s: provider %s failed to start: %s (%s)", session.name, adapter.info.name,
                        exc.reason, exc.message)
        return self._start_error(exc, adapter.info.name)

    async def _start_one(self, session: AvatarSession, adapter: ProviderAdapter) -> None:
        """Start `session` on `adapter`; it ends if the gateway began shutting down meanwhile."""
        await self._start(session, adapter)
        if self._closing:
                # shutdown may have ended the session while it was STARTING; a start that completes afterwards
                # must not leave it ACTIVE with running tasks (shutdown would wait for them forever)
            await session.end(EndReason.SERVER_SHUTDOWN, "the gateway is shutting down")
            raise errors.unavailable("the gateway is shutting down", "SHUTTING_DOWN", 1.0)

    async def _claim(self, key: str, claimed: list[str], taken: Callable[[int], BaseException]) -> None:
        claim = await self.directory.claim(key)
        if claim.created:
            claimed.append(key)
        if claim.owner != self.directory.index:
            raise taken(claim.owner)

    async def _replay(self, caller: Caller, req: pb.StartSessionRequest, request_id: str, pending: _Pending
                      ) -> AvatarSession:
        if pending.owner != caller.principal:  # another caller's: never name its session
            raise errors.request_id_reused(request_id, None)
        if pending.fingerprint != _fingerprint(req):
            raise errors.request_id_reused(request_id, pending.session)
        try:
            return await asyncio.shield(pending.future)
        except Exception as exc:
            raise self._start_error(exc, req.provider) from None

    def _validate(self, caller: Caller, req: pb.StartSessionRequest, adapter: ProviderAdapter) -> SessionParams:
        url = validation.check_room(req, self.config)
        video = validation.check_video(req, adapter)
        idle, longest = validation.check_timeouts(req, self.config, adapter)
        labels = validation.check_labels(dict(req.labels))
        video_delay = validation.check_video_delay(req, self.config)
        transport = validation.check_audio_transport(req, self.config)
        validation.check_options(req, adapter)
        session_id = validation.check_session_id(req.session_id) if req.session_id else \
            self.directory.new_session_id()
        info = adapter.info
        if not info.enabled:
            raise errors.failed_precondition("PROVIDER_DISABLED", f"provider {info.name!r} is not available: "
                                             f"{info.disabled_reason}", subject=f"providers/{info.name}",
                                             violation_type="PROVIDER_CONFIG", metadata={"provider": info.name})
        if not self.config.headless and not self.config.livekit_configured:
            raise errors.failed_precondition(
                "LIVEKIT_NOT_CONFIGURED", "this gateway has no LiveKit server configured (set LIVEKIT_URL, "
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET)", subject="gateway", violation_type="GATEWAY_CONFIG")
        return SessionParams(
            session_id=session_id, owner=caller.principal, provider=info.name, room_url=url,
            room_name=req.room.room_name, agent_identity=req.room.agent_identity, avatar_id=req.avatar_id,
            video=video, idle_timeout_s=idle, max_duration_s=longest, labels=labels, video_delay_s=video_delay,
            audio_transport=transport, provider_options=dict(req.provider_options),
        )

    async def _start(self, session: AvatarSession, adapter: ProviderAdapter) -> None:
        p = self.config
        params = session.params
        info = adapter.info
        # the gateway's own participant: the avatar itself, or beside a vendor's worker its relay; when the agent
        # streams to the vendor itself (the room transport), a hidden watcher, so the vendor can only find the agent
        identity = session.avatar_identity if info.gateway_publishes else relay_identity(session.avatar_identity)
        agent_sends = params.audio_transport is AudioTransport.ROOM and not info.gateway_publishes
        sources, kind, hidden = _own_grants(info.gateway_publishes, agent_sends)
        token = "" if p.headless else mint_avatar_token(
            api_key=p.livekit_api_key, api_secret=p.livekit_api_secret, room_name=params.room_name,
            identity=identity, agent_identity=params.agent_identity, provider=info.name,
            can_subscribe=info.needs_subscribe, ttl_s=p.token_ttl_s, sources=sources, kind=kind, hidden=hidden)
        own = RoomSpec(url=params.room_url, room_name=params.room_name, agent_identity=params.agent_identity,
                       avatar_identity=identity, token=token)
        room = own if info.gateway_publishes else dataclasses.replace(own, avatar_identity=session.avatar_identity,
                                                                      token="")
        spec = SessionSpec(session_id=params.session_id, avatar_id=params.avatar_id, options=params.provider_options,
                           video=params.video, room=room)
        room_input = None
        if params.audio_transport is AudioTransport.ROOM and info.gateway_publishes:
            room_input = RoomAudioInput(session, max_buffered_s=p.max_buffered_s)
            session.use_input(room_input)
        if agent_sends:
            session.idle_from_audio = False  # the gateway never sees the agent's audio: only max_duration ends it
        connection = None if p.headless else RoomConnection(
            own, on_lost=session.room_lost, on_joined=room_input.bind if room_input is not None else None)
        admin = None if p.headless else GatewayRoomAdmin(
            url=params.room_url, api_key=p.livekit_api_key, api_secret=p.livekit_api_secret,
            room_name=params.room_name, agent_identity=params.agent_identity, provider=info.name)
        pipeline = adapter.pipeline(PipelineParts(spec, session.book, connection, lead_ms=p.lead_ms,
                                                  video_delay_ms=round(params.video_delay_s * 1000),
                                                  on_republished=self.metrics.record_republish, room_admin=admin,
                                                  agent_sends_audio=agent_sends, on_notice=session.notice))
        log.info("session %s starting: provider=%s room=%s", session.name, params.provider, params.room_name)
        await session.start(pipeline, timeout_s=p.start_timeout_s)
        log.info("session %s active", session.name)

    def _start_error(self, exc: BaseException, provider: str) -> BaseException:
        if isinstance(exc, errors.GatewayError | asyncio.CancelledError):
            return exc
        if isinstance(exc, ProviderError):
            return errors.provider_failure(exc, provider)
        if isinstance(exc, RoomJoinError):
            return errors.unavailable(str(exc), "ROOM_JOIN_FAILED", 2.0)
        if isinstance(exc, TimeoutError):
            return errors.unavailable("the session did not start in time", "START_TIMEOUT", 2.0)
        if isinstance(exc, SessionEndedWhileStarting):
            if self._closing:
                return errors.unavailable("the gateway is shutting down", "SHUTTING_DOWN", 1.0)
            return errors.unavailable("the session was ended while it was starting", "ENDED_WHILE_STARTING", 1.0)
        return errors.internal()

    def _remember_ended(self, session: AvatarSession) -> None:
        self._ended[session.name] = None
        while len(self._ended) > self.config.ended_retention:
            name, _ = self._ended.popitem(last=False)
            gone = self._sessions.pop(name, None)
            if gone is None:
                continue
            self.directory.release(session_key(gone.params.session_id))
            if gone.request_id and self._requests.pop(gone.request_id, None) is not None:
                self.directory.release(request_key(gone.request_id))  # forgotten sessions free their keys

    # -- end ----------------------------------------------------------------------------------------------------
    async def end(self, caller: Caller, name: str) -> AvatarSession:
        """EndSession: idempotent; returns the terminal session."""
        session = await self.locate(caller, name)
        await session.end(EndReason.CLIENT_REQUEST, "EndSession was called")
        await session.wait_ended()
        return session

    def begin_shutdown(self) -> None:
        """Refuse new sessions from now on."""
        self._closing = True

    async def shutdown(self) -> None:
        """End every session (SERVER_SHUTDOWN) and wait until all their tasks are done."""
        self._closing = True
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.end(EndReason.SERVER_SHUTDOWN, "the gateway is shutting down") for s in sessions))
        await asyncio.gather(*(s.drain_tasks() for s in sessions))


def _own_grants(publishes: bool, agent_sends: bool) -> tuple[tuple[str, ...], Literal["agent", "standard"], bool]:
    """(sources it may publish, kind, hidden) of the gateway's own participant: the avatar publishes camera and
    microphone; a vendor's relay only the microphone (the voice alone, should the vendor go); the watcher of a
    vendor the agent speaks to itself nothing, and no one sees it (so the vendor can only find the agent)."""
    if publishes:
        return ("camera", "microphone"), "agent", False
    if agent_sends:
        return (), "standard", True
    return ("microphone",), "agent", False


def _failover(exc: BaseException, provider: str) -> Failover | None:
    """Why a start that failed with `exc` may go on to the next provider (None: another would fail the same way)."""
    if isinstance(exc, ProviderError) and exc.fault in (ProviderFault.UNAVAILABLE, ProviderFault.QUOTA):
        return Failover(provider, exc.reason, exc.message)
    if isinstance(exc, TimeoutError):
        return Failover(provider, "START_TIMEOUT", "the session did not start in time")
    return None


def _fingerprint(req: pb.StartSessionRequest) -> str:
    copy = pb.StartSessionRequest()
    copy.CopyFrom(req)
    copy.request_id = ""  # compared in canonical form separately: any spelling of the same UUID is the same id
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _list_key(session: AvatarSession) -> paging.ListKey:
    """The session's ListSessions position, as its Session message carries it (paging.key_of)."""
    return epoch_ns(session.create_time), session.name
