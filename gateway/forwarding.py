"""Forwarding a call to the worker process that owns its session (gateway.cluster).

The caller's credentials go along (the owner authenticates the call itself) with a marker that stops the owner from
forwarding it again. What the owner answers comes back unchanged: responses, the status code and message, and the
google.rpc.Status details; a worker that does not answer is UNAVAILABLE with RetryInfo.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, NoReturn

import grpc

from gateway.cluster import worker_unavailable

FORWARDED = "x-avatar-forwarded"  # set on calls one worker forwards to another
_PASSED = ("authorization",)
_DETAILS = "grpc-status-details-bin"

Ctx = Any  # grpc.aio.ServicerContext


def is_forwarded(context: Ctx) -> bool:
    """The call came from another worker (answer it here, never forward it again)."""
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


def _metadata(context: Ctx) -> tuple[tuple[str, str], ...]:
    passed = tuple((k, v) for k, v in context.invocation_metadata() or () if k in _PASSED)
    return (*passed, (FORWARDED, "1"))


async def _relay_error(err: grpc.aio.AioRpcError, context: Ctx) -> NoReturn:
    details = tuple((k, v) for k, v in err.trailing_metadata() or () if k == _DETAILS)
    if not details and err.code() is grpc.StatusCode.UNAVAILABLE:  # the worker is unreachable or going away
        raise worker_unavailable() from None
    # the owner's answer: its gateway errors carry their details, gRPC's own (a deadline) are passed as they are
    await context.abort(err.code(), err.details() or "", trailing_metadata=details)
    raise AssertionError("abort returned")  # pragma: no cover


class Forwarder:
    """Forwards one call, made to this worker, to the owner's public service on its private socket."""

    def __init__(self, stub: Any, context: Ctx) -> None:
        self._stub = stub
        self._context = context

    async def unary(self, method: str, request: Any) -> Any:
        """A unary call: the owner's response, or its error."""
        ctx = self._context
        try:
            return await getattr(self._stub, method)(request, metadata=_metadata(ctx), timeout=ctx.time_remaining())
        except grpc.aio.AioRpcError as err:
            await _relay_error(err, ctx)

    async def server_stream(self, method: str, request: Any) -> None:
        """A server-streaming call: every response written to our caller, then the owner's status."""
        ctx = self._context
        call = getattr(self._stub, method)(request, metadata=_metadata(ctx), timeout=ctx.time_remaining())
        try:
            await self._relay(call)
        finally:
            call.cancel()

    async def bidi(self, method: str, first: Any, requests: AsyncIterator[Any],
                   responses: Callable[[Any], AsyncGenerator[Any, None]] | None = None) -> None:
        """A bidirectional call whose first request was already read: requests go up as they come (a half-close
        too), responses come down (what `responses(call)` yields, if given: the owner's, and any of this
        worker's own), and a cancel by our caller cancels the owner's call."""
        ctx = self._context
        call = getattr(self._stub, method)(metadata=_metadata(ctx), timeout=ctx.time_remaining())

        async def up() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await call.write(first)
                async for request in requests:
                    await call.write(request)
                await call.done_writing()

        sender = asyncio.get_running_loop().create_task(up(), name="forward-requests")
        relayed = None if responses is None else responses(call)
        try:
            await self._relay(call if relayed is None else relayed)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            call.cancel()
            if relayed is not None:
                await relayed.aclose()

    async def _relay(self, responses: AsyncIterator[Any]) -> None:
        """Every response (of the owner's call) to our caller; the owner's error, if any, becomes ours."""
        try:
            async for response in responses:
                await self._context.write(response)
        except grpc.aio.AioRpcError as err:
            await _relay_error(err, self._context)
