"""Gateway errors as Python exceptions carrying the decoded google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.RequestInfo,
)


@dataclass
class GatewayError(Exception):
    """A failed call. `reason`/`domain`/`metadata` come from ErrorInfo; `details` holds every decoded detail."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    details: list[Message] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" + (f" ({self.reason})" if self.reason else "")

    def detail(self, kind: type[Message]) -> Message | None:
        """The first detail of a type (e.g. error_details_pb2.BadRequest), if present."""
        return next((d for d in self.details if isinstance(d, kind)), None)

    @property
    def field_violations(self) -> list[str]:
        """Fields named by a BadRequest detail."""
        bad = self.detail(error_details_pb2.BadRequest)
        return [v.field for v in bad.field_violations] if isinstance(bad, error_details_pb2.BadRequest) else []

    @property
    def retry_after(self) -> float | None:
        """RetryInfo's delay in seconds, if any."""
        info = self.detail(error_details_pb2.RetryInfo)
        if isinstance(info, error_details_pb2.RetryInfo):
            return float(info.retry_delay.ToNanoseconds()) / 1e9
        return None


def from_rpc_error(err: grpc.aio.AioRpcError) -> GatewayError:
    """Decode the status details of a failed call."""
    code = err.code()
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        status = None
    if status is None:
        return GatewayError(code=code, message=err.details() or "")
    return from_status(status)


def from_status(status: status_pb2.Status) -> GatewayError:
    """Decode a google.rpc.Status (as received in a status or in-band)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    out = GatewayError(code=code, message=status.message)
    for packed in status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                msg = kind()
                packed.Unpack(msg)
                out.details.append(msg)
                if isinstance(msg, error_details_pb2.ErrorInfo) and not out.reason:
                    out.reason, out.domain, out.metadata = msg.reason, msg.domain, dict(msg.metadata)
                break
    return out
