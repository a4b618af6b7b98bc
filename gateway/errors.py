"""The error model: every failure is a google.rpc.Status with an ErrorInfo and the details that fit (AIP-193)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from providers.base import ProviderError, ProviderFault

DOMAIN = "avatar.v1"
SESSION_TYPE = "avatar.v1/Session"


class GatewayError(Exception):
    """An error the gateway reports to its caller. The message is safe to show (no secrets, no internals)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        *,
        metadata: Mapping[str, str] | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.details = list(details)
        self.sent_in_band = False  # StreamAudio: already written as the stream's last response

    def to_status(self) -> grpc.Status:
        """The grpc.Status carrying the google.rpc.Status with ErrorInfo first, then the other details."""
        return rpc_status.to_status(self.to_proto())

    def to_proto(self) -> status_pb2.Status:
        """The google.rpc.Status: ErrorInfo first, then the other details."""
        infos: list[Message] = [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata),
            *self.details,
        ]
        packed = []
        for detail in infos:
            msg = any_pb2.Any()
            msg.Pack(detail)
            packed.append(msg)
        return status_pb2.Status(code=_CODE[self.code], message=self.message, details=packed)


_CODE: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}


def invalid_argument(field: str, description: str, reason: str = "INVALID_ARGUMENT") -> GatewayError:
    """A request field is wrong; BadRequest names it."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description, reason=reason)
        ]
    )
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT, description, reason, metadata={"field": field}, details=[bad]
    )


def not_found(name: str) -> GatewayError:
    """No such session."""
    info = error_details_pb2.ResourceInfo(resource_type=SESSION_TYPE, resource_name=name,
                                          description="no session with this name")
    return GatewayError(grpc.StatusCode.NOT_FOUND, f"session {name!r} not found", "SESSION_NOT_FOUND",
                        metadata={"session": name}, details=[info])


def failed_precondition(reason: str, message: str, *, subject: str, violation_type: str,
                        metadata: Mapping[str, str] | None = None) -> GatewayError:
    """The system is not in a state where the call can work."""
    pre = error_details_pb2.PreconditionFailure(
        violations=[error_details_pb2.PreconditionFailure.Violation(type=violation_type, subject=subject,
                                                                    description=message)]
    )
    return GatewayError(grpc.StatusCode.FAILED_PRECONDITION, message, reason, metadata=metadata,
                        details=[pre])


def unavailable(message: str, reason: str, retry_after_s: float, metadata: Mapping[str, str] | None = None
                ) -> GatewayError:
    """Try again later; RetryInfo says when."""
    return GatewayError(grpc.StatusCode.UNAVAILABLE, message, reason, metadata=metadata,
                        details=[retry_info(retry_after_s)])


def retry_info(retry_after_s: float) -> error_details_pb2.RetryInfo:
    """When to try again."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after_s * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def resource_exhausted(message: str, reason: str, subject: str, metadata: Mapping[str, str] | None = None
                       ) -> GatewayError:
    """A quota or cap was hit; QuotaFailure names it."""
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)]
    )
    return GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason, metadata=metadata,
                        details=[quota])


def internal() -> GatewayError:
    """Something unexpected; the text says nothing about why."""
    return GatewayError(grpc.StatusCode.INTERNAL, "Internal error.", "INTERNAL")


def unauthenticated(message: str) -> GatewayError:
    """Missing or bad caller credentials."""
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")


def permission_denied(message: str, metadata: Mapping[str, str] | None = None) -> GatewayError:
    """The caller may not do this."""
    return GatewayError(grpc.StatusCode.PERMISSION_DENIED, message, "PERMISSION_DENIED", metadata=metadata)


def request_id_reused(request_id: str, session: str | None) -> GatewayError:
    """A StartSession request_id already used with other parameters; names the session it started (None when that
    session is another caller's: its name is not theirs to learn)."""
    message = "request_id was already used for a different StartSession request"
    metadata = {"request_id": request_id}
    if session is None:
        return GatewayError(grpc.StatusCode.ALREADY_EXISTS, message, "REQUEST_ID_REUSED", metadata=metadata)
    info = error_details_pb2.ResourceInfo(resource_type=SESSION_TYPE, resource_name=session,
                                          description=f"started by request_id {request_id}")
    return GatewayError(grpc.StatusCode.ALREADY_EXISTS, message, "REQUEST_ID_REUSED",
                        metadata={**metadata, "session": session}, details=[info])


def already_exists(message: str, reason: str, name: str) -> GatewayError:
    """An id is taken."""
    info = error_details_pb2.ResourceInfo(resource_type=SESSION_TYPE, resource_name=name, description=message)
    return GatewayError(grpc.StatusCode.ALREADY_EXISTS, message, reason, metadata={"session": name},
                        details=[info])


def provider_failure(exc: ProviderError, provider: str) -> GatewayError:
    """A provider's failure as the agent sees it: the status its fault calls for, ErrorInfo with the provider's
    reason and metadata `provider`. A provider refusing the gateway's own credentials is INTERNAL, never
    UNAUTHENTICATED (that would tell the agent its own call was refused)."""
    meta = {"provider": provider}
    fault = exc.fault
    if fault is ProviderFault.BAD_REQUEST:
        err = invalid_argument(exc.field, exc.message, exc.reason)
        err.metadata.update(meta)
        return err
    if fault is ProviderFault.PRECONDITION:
        return failed_precondition(exc.reason, exc.message, subject=f"providers/{provider}",
                                   violation_type="PROVIDER_ACCOUNT", metadata=meta)
    if fault in (ProviderFault.UNAVAILABLE, ProviderFault.IDLE):
        return unavailable(exc.message, exc.reason, exc.retry_after_s, meta)
    if fault is ProviderFault.QUOTA:
        err = resource_exhausted(exc.message, exc.reason, f"providers/{provider}", meta)
        err.details.append(retry_info(exc.retry_after_s))
        return err
    if fault is ProviderFault.AUTH:
        return GatewayError(grpc.StatusCode.INTERNAL, f"provider {provider!r} refused this gateway's credentials; "
                            "the gateway's operator must fix its configuration", exc.reason, metadata=meta)
    return GatewayError(grpc.StatusCode.INTERNAL, "Internal error.", "INTERNAL", metadata=meta)
