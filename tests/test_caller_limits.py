"""Per-caller limits: sessions at once and StartSession rate, each answered RESOURCE_EXHAUSTED with QuotaFailure and
RetryInfo, and one caller's limit never touching another's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from agent_client import AvatarGatewayClient, GatewayError
from gateway import errors
from gateway.caller_limits import CallerLimits
from gateway.config import Caller
from tests.conftest import start_mock

KEYS = {"key-a": Caller("alice"), "key-b": Caller("bob")}


async def refusal(client: AvatarGatewayClient) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        await start_mock(client)
    return err.value


def quota_subject(err: GatewayError) -> str:
    quota = err.detail(error_details_pb2.QuotaFailure)
    assert isinstance(quota, error_details_pb2.QuotaFailure)
    return str(quota.violations[0].subject)


async def test_a_caller_at_its_session_limit_is_refused_and_others_are_not(make_gateway: Callable[..., Any]) -> None:
    server = await make_gateway(api_keys=KEYS, max_sessions_per_caller=2)
    target = f"127.0.0.1:{server.port}"
    async with AvatarGatewayClient(target, api_key="key-a") as alice, \
            AvatarGatewayClient(target, api_key="key-b") as bob:
        first = await start_mock(alice)
        await start_mock(alice)
        err = await refusal(alice)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_SESSION_LIMIT")
        assert quota_subject(err) == "callers/alice/sessions" and err.retry_after is not None
        await start_mock(bob)  # bob's own limit
        await alice.end_session(first)
        await start_mock(alice)  # a slot freed


async def test_a_caller_starting_too_fast_is_told_when_to_retry(make_gateway: Callable[..., Any]) -> None:
    server = await make_gateway(api_keys=KEYS, starts_per_minute_per_caller=2)
    target = f"127.0.0.1:{server.port}"
    async with AvatarGatewayClient(target, api_key="key-a") as alice, \
            AvatarGatewayClient(target, api_key="key-b") as bob:
        await start_mock(alice)
        await start_mock(alice)
        err = await refusal(alice)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CALLER_START_RATE")
        assert quota_subject(err) == "callers/alice/starts"
        retry = err.retry_after
        assert retry is not None and 0 < retry <= 30.0  # one start back in at most 60 s / 2
        await start_mock(bob)


def test_the_start_rate_refills_with_time() -> None:
    now = [0.0]
    limits = CallerLimits(0, 6, clock=lambda: now[0])  # one start every 10 s, bursts of 6
    for _ in range(6):
        limits.take_start("alice")
    with pytest.raises(errors.GatewayError) as err:
        limits.take_start("alice")
    retry = err.value.details[-1]
    assert isinstance(retry, error_details_pb2.RetryInfo) and retry.retry_delay.seconds == 10
    now[0] = 9.9
    with pytest.raises(errors.GatewayError):
        limits.take_start("alice")
    now[0] = 10.0
    limits.take_start("alice")
    limits.take_start("bob")  # another principal has its own bucket
