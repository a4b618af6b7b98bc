"""The room-native vendors: each is one table entry (what the vendor needs, how its worker behaves) and its start
and stop calls, as the vendors' own LiveKit plugins make them (livekit-plugins-<vendor> 1.8.9).

A vendor's worker joins the session's room with a token the gateway mints and takes the agent's speech as
`lk.audio_stream` byte streams. Who it takes them from decides whether the gateway can relay: a vendor whose start
call names the sender (`Listens.NAMED`) listens to the gateway's relay participant; the others run livekit-agents'
stock receiver, which takes the first agent participant in the room (`Listens.FIRST_AGENT`).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from providers.base import ProviderError
from providers.room_native.vendor_http import VendorCall, VendorHttp


class Listens(enum.Enum):
    """Whose `lk.audio_stream` a vendor's worker plays."""

    NAMED = "named"  # the participant the start call names: the gateway's relay
    FIRST_AGENT = "first_agent"  # the first agent-kind participant in the room (livekit-agents' default)


@dataclass(frozen=True, slots=True)
class StartContext:
    """What a vendor's start call is made from."""

    session_id: str
    livekit_url: str
    room_name: str
    avatar_identity: str  # the identity the worker token carries
    sender_identity: str  # who streams the agent's speech to the worker: the relay, or the agent itself (direct)
    avatar_id: str  # the vendor's face / avatar / agent id ("" if the caller gave none)
    options: dict[str, str]
    worker_token: str = field(repr=False)


StartFn = Callable[[VendorHttp, str, StartContext], Awaitable[str]]
StopFn = Callable[[str, str], VendorCall | None]


@dataclass(frozen=True, slots=True)
class Vendor:
    """One room-native vendor."""

    name: str  # the provider name agents ask for
    display_name: str
    key_env: str  # its API key's environment variable (a `<key_env>_FILE` works too)
    url_env: str  # overrides `base_url`
    base_url: str
    sample_rate: int  # what its worker takes (the stream's `sample_rate` attribute)
    listens: Listens
    start: StartFn  # returns the vendor's session id
    stop: StopFn  # the call that ends a vendor session (None: the vendor has none; removal from the room ends it)
    sends_playback_started: bool = False  # its worker calls `lk.playback_started`
    wait_track: str = "video"  # the worker's track the session waits for before it is ready
    max_session_s: float = 3600.0  # how long a session may last: ahead of the vendor's own cap, if it has one
    default_avatar_id: str = ""  # "" : the caller must give one
    options: tuple[str, ...] = ()  # provider_options it takes


def _id(answer: dict[str, Any], *path: str) -> str:
    value: Any = answer
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        raise ProviderError.unavailable(f"the vendor's answer has no {'.'.join(path)}", "PROVIDER_BAD_ANSWER")
    return value


# -- the start and stop calls, one pair per vendor ----------------------------------------------------------------
async def _tavus_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"pal_id": c.options.get("pal_id", "pb87e71797da"), "face_id": c.avatar_id,
            "conversation_name": f"lk_conversation_{c.session_id}",
            "properties": {"livekit_ws_url": c.livekit_url, "livekit_room_token": c.worker_token}}
    return _id(await http.call(VendorCall("POST", "/v2/conversations", {"x-api-key": key}, body)), "conversation_id")


def _tavus_stop(key: str, session: str) -> VendorCall:
    return VendorCall("POST", f"/v2/conversations/{session}/end", {"x-api-key": key})


async def _did_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"transport": {"provider": "livekit", "server_url": c.livekit_url, "token": c.worker_token,
                          "room_name": c.room_name},
            "audio_config": {"sample_rate": 24000}}
    call = VendorCall("POST", f"/v2/agents/{c.avatar_id}/sessions/join", {"Authorization": f"Basic {key}"}, body)
    return _id(await http.call(call), "id")


async def _bey_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"transport": "livekit", "avatar_id": c.avatar_id, "url": c.livekit_url, "token": c.worker_token}
    return _id(await http.call(VendorCall("POST", "/v1/sessions", {"x-api-key": key}, body)), "id")


async def _anam_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"personaConfig": {"type": "ephemeral", "name": "avatar", "avatarId": c.avatar_id,
                              "llmId": "CUSTOMER_CLIENT_V1"},
            "environment": {"livekitUrl": c.livekit_url, "livekitToken": c.worker_token}}
    call = VendorCall("POST", "/v1/engine/session", {"Authorization": f"Bearer {key}"}, body)
    return _id(await http.call(call), "sessionId")


async def _simli_start(http: VendorHttp, key: str, c: StartContext) -> str:
    token_body = {"faceId": c.avatar_id, "handleSilence": True, "maxSessionLength": 600, "maxIdleTime": 30}
    answer = await http.call(VendorCall("POST", "/compose/token", {"x-simli-api-key": key}, token_body))
    body = {"session_token": _id(answer, "session_token"), "livekit_token": c.worker_token,
            "livekit_url": c.livekit_url}
    return _id(await http.call(VendorCall("POST", "/integrations/livekit/agents", {}, body)), "session_id")


def _runway_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Runway-Version": "2024-11-06"}


async def _runway_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"model": "gwm1_avatars", "avatar": {"type": "custom", "avatarId": c.avatar_id},
            "livekit": {"url": c.livekit_url, "token": c.worker_token, "roomName": c.room_name,
                        "agentIdentity": c.sender_identity}}
    return _id(await http.call(VendorCall("POST", "/v1/realtime_sessions", _runway_headers(key), body)), "id")


def _runway_stop(key: str, session: str) -> VendorCall:
    return VendorCall("DELETE", f"/v1/realtime_sessions/{session}", _runway_headers(key))


async def _lemonslice_start(http: VendorHttp, key: str, c: StartContext) -> str:
    body = {"transport_type": "livekit", "agent_id": c.avatar_id, "audio_sample_rate": 24000,
            "properties": {"livekit_url": c.livekit_url, "livekit_token": c.worker_token}}
    return _id(await http.call(VendorCall("POST", "/api/liveai/sessions", {"X-API-Key": key}, body)), "session_id")


def _no_stop(key: str, session: str) -> None:
    return None


VENDORS: tuple[Vendor, ...] = (
    Vendor("tavus", "Tavus (LiveKit transport)", "TAVUS_API_KEY", "TAVUS_API_URL", "https://tavusapi.com", 24000,
           Listens.FIRST_AGENT, _tavus_start, _tavus_stop, default_avatar_id="r4067604db72", options=("pal_id",)),
    Vendor("did", "D-ID (agent joins the room)", "DID_API_KEY", "DID_API_URL", "https://api.d-id.com", 24000,
           Listens.FIRST_AGENT, _did_start, _no_stop),
    Vendor("bey", "Beyond Presence", "BEY_API_KEY", "BEY_API_URL", "https://api.bey.dev", 16000,
           Listens.FIRST_AGENT, _bey_start, _no_stop),
    Vendor("anam", "Anam", "ANAM_API_KEY", "ANAM_API_URL", "https://api.anam.ai", 24000,
           Listens.FIRST_AGENT, _anam_start, _no_stop, sends_playback_started=True),
    Vendor("simli-livekit", "Simli (its LiveKit agents integration)", "SIMLI_API_KEY", "SIMLI_URL",
           "https://api.simli.ai", 16000, Listens.FIRST_AGENT, _simli_start, _no_stop,
           max_session_s=590.0),  # the start asks for maxSessionLength 600 s
    Vendor("runway", "Runway", "RUNWAYML_API_SECRET", "RUNWAYML_BASE_URL", "https://api.dev.runwayml.com", 16000,
           Listens.NAMED, _runway_start, _runway_stop,
           max_session_s=290.0),  # Runway ends sessions silently at ~300 s, whatever maxDuration says
    Vendor("lemonslice", "LemonSlice", "LEMONSLICE_API_KEY", "LEMONSLICE_API_URL", "https://lemonslice.com", 24000,
           Listens.FIRST_AGENT, _lemonslice_start, _no_stop, sends_playback_started=True),
)
