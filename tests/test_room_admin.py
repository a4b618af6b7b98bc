"""The token the gateway mints for a room-native vendor's worker."""

from __future__ import annotations

import jwt

from gateway.room_admin import GatewayRoomAdmin


def test_a_vendor_worker_s_token_is_tight() -> None:
    admin = GatewayRoomAdmin(url="ws://x", api_key="k", api_secret="s" * 32, room_name="r", agent_identity="a",
                             provider="tavus")
    claims = jwt.decode(admin.worker_token("w", can_subscribe=False), options={"verify_signature": False})
    video = claims["video"]
    assert claims["sub"] == "w" and claims["kind"] == "agent" and claims["exp"] - claims["nbf"] <= 120
    assert video["room"] == "r" and video["roomJoin"] and video["canPublishData"]
    assert video["canSubscribe"] is False and sorted(video["canPublishSources"]) == ["camera", "microphone"]
    assert claims["attributes"] == {"lk.publish_on_behalf": "a", "lk.avatar_provider": "tavus"}
