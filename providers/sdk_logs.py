"""Keeps one known, harmless LiveKit SDK message out of the error log.

When a room is closed, the SDK unpublishes the local tracks and then closes its peer connection. With
`fast_publish` (livekit-server grants it to every participant that may publish) each unpublish starts a
renegotiation at once, and that negotiation can lose the race with the close: the SDK then logs "failed to
negotiate the publisher ... closed" (or "peer connection is closed, cannot create offer") at warning or error
level although nothing failed. This filter lowers exactly those messages to debug; every other SDK message passes
unchanged.
"""

from __future__ import annotations

import logging

_SDK_LOGGER = "livekit"
_NEGOTIATION_FAILED = "failed to negotiate the publisher"
_CLOSED_MARKERS = ("wrong state: closed", "PeerConnection is closed")
_OFFER_ON_CLOSED = "peer connection is closed, cannot create offer"


class CloseRaceFilter(logging.Filter):
    """Turns the close-time renegotiation message into a debug record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if _OFFER_ON_CLOSED in message or (
            _NEGOTIATION_FAILED in message and any(marker in message for marker in _CLOSED_MARKERS)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(_SDK_LOGGER).isEnabledFor(logging.DEBUG)
        return True


def install() -> None:
    """Add the filter to the SDK's logger once (idempotent)."""
    logger = logging.getLogger(_SDK_LOGGER)
    if not any(isinstance(f, CloseRaceFilter) for f in logger.filters):
        logger.addFilter(CloseRaceFilter())
