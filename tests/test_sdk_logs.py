"""The SDK close-race message is lowered to debug; every other SDK record passes unchanged."""

from __future__ import annotations

import logging

import pytest

from providers import sdk_logs

RACE = ('livekit::rtc_engine::rtc_session:2526:livekit::rtc_engine::rtc_session - failed to negotiate the publisher: '
        'Rtc(RtcError { error_type: InvalidState, message: "Failed to set local offer sdp: Called in wrong state: '
        'closed" })')
OFFER_ON_CLOSED = ("livekit::rtc_engine::peer_transport:532:livekit::rtc_engine::peer_transport - peer connection "
                   "is closed, cannot create offer")


def _record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("livekit", level, __file__, 1, "%s", (message,), None)


def test_close_race_is_lowered_to_debug_and_dropped() -> None:
    for message, level in ((RACE, logging.ERROR), (OFFER_ON_CLOSED, logging.WARNING)):
        record = _record(message, level)
        assert not sdk_logs.CloseRaceFilter().filter(record)
        assert record.levelno == logging.DEBUG


def test_other_sdk_errors_pass_unchanged() -> None:
    for message in ("failed to negotiate the publisher: Rtc(RtcError { error_type: Internal })",
                    "signal connection failed: closed"):
        record = _record(message)
        assert sdk_logs.CloseRaceFilter().filter(record)
        assert record.levelno == logging.ERROR


def test_install_is_idempotent_and_filters_the_sdk_logger(caplog: pytest.LogCaptureFixture) -> None:
    sdk_logs.install()
    sdk_logs.install()
    logger = logging.getLogger("livekit")
    assert sum(isinstance(f, sdk_logs.CloseRaceFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="livekit"):
        logger.error("%s", RACE)
        logger.error("%s", "something else failed")
    assert [r.getMessage() for r in caplog.records] == ["something else failed"]
