"""Secrets (the LiveKit API secret, minted tokens, caller API keys) never appear in logs, errors or exceptions."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from agent_client import AvatarGatewayClient, GatewayError
from gateway.config import Caller, from_env
from gateway.logs import RedactSecrets
from gateway.server import GatewayServer

SECRET = "s3cr3t-livekit-value-0123456789abcdef"
CALLER_KEY = "caller-key-fedcba9876543210"


async def test_failed_room_join_leaks_nothing(make_gateway: Callable[..., object],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # a LiveKit URL where nothing listens: the join fails, and the error path is where URLs with tokens leak
    server = await make_gateway(headless=False, livekit_url="ws://127.0.0.1:9", livekit_api_key="key",  # type: ignore[misc]
                                livekit_api_secret=SECRET, api_keys={CALLER_KEY: Caller("alice")},
                                start_timeout_s=10.0)
    assert isinstance(server, GatewayServer)
    async with AvatarGatewayClient(f"127.0.0.1:{server.port}", api_key=CALLER_KEY, timeout=20) as client:
        with pytest.raises(GatewayError) as err:
            await client.start_session("mock", room_name="room", agent_identity="agent")
        sessions = [s async for s in client.list_sessions(show_ended=True)]
    session = sessions[0]
    text = " ".join([str(err.value), repr(err.value.details), str(session), caplog.text, repr(server.config)])
    assert err.value.reason == "ROOM_JOIN_FAILED"
    assert SECRET not in text
    assert CALLER_KEY not in text
    assert "eyJ" not in text, "a JWT (token) appeared"


def test_log_filter_masks_configured_secrets() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connecting with %s", (SECRET,), None)
    assert RedactSecrets([SECRET]).filter(record)
    assert SECRET not in record.getMessage() and "[redacted]" in record.getMessage()


def test_config_repr_hides_secrets() -> None:
    config = from_env({"LIVEKIT_API_SECRET": SECRET, "AVATAR_GATEWAY_API_KEYS": f"alice:{CALLER_KEY}"})
    assert SECRET not in repr(config) and CALLER_KEY not in repr(config)
