"""Server interceptor: GatewayError becomes its google.rpc.Status; anything unexpected becomes INTERNAL with no text
from the exception (grpc.aio would otherwise answer UNKNOWN with the exception's message: a leak). A request whose
bytes do not parse is INVALID_ARGUMENT with details and one log line (grpc.aio would answer UNKNOWN with the parser's
message and log a traceback per call, which any caller could use to flood the log)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from gateway import errors

log = logging.getLogger(__name__)

Behavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]


async def _report(exc: Exception, method: str, context: aio.ServicerContext[Any, Any]) -> None:
    if isinstance(exc, errors.GatewayError):
        log.info("%s -> %s %s", method, exc.code.name, exc.reason)
        await context.abort_with_status(exc.to_status())
    log.exception("%s failed", method)
    await context.abort_with_status(errors.internal().to_status())


class _Undecodable:
    """What a request whose bytes did not parse is handed to the handler as."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _Undecodable(len(data))

    return parse


def _check_decoded(request: Any, method: str) -> None:
    if isinstance(request, _Undecodable):
        message = method.rsplit("/", 1)[-1]
        raise errors.invalid_argument("request", f"the {message} request ({request.size} bytes) is not a valid "
                                      "protobuf message", "UNDECODABLE_REQUEST")


def _guard_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            _check_decoded(request, method)
            async for item in behavior(request, context):
                yield item
        except (aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            await _report(exc, method, context)

    return guarded


def _guard(behavior: Behavior, method: str) -> Behavior:
    async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        try:
            _check_decoded(request, method)
            return await behavior(request, context)
        except (aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _report(exc, method, context)

    return guarded


class ErrorInterceptor(aio.ServerInterceptor):  # type: ignore[misc]
    """Maps exceptions of every RPC to statuses with details."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                # a single request is parsed before the handler runs: parse it tolerantly, refuse it in the handler
                parsing = {"request_deserializer": _tolerant(handler.request_deserializer)} if (
                    not handler.request_streaming) else {}
                if inspect.isasyncgenfunction(behavior):
                    return handler._replace(**{kind: _guard_stream(behavior, method)}, **parsing)
                if not inspect.iscoroutinefunction(behavior):
                    return handler
                return handler._replace(**{kind: _guard(behavior, method)}, **parsing)
        return handler
