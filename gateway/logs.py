"""Structured logging with a last line of defence: configured secrets are masked in every record."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable


class RedactSecrets(logging.Filter):
    """Replaces every configured secret (and token-like JWTs) in a record's final message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for secret in self._secrets:
            masked = masked.replace(secret, "[redacted]")
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the worker process if one of several, and the
    exception type if any."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(*, json_lines: bool, level: str, secrets: Iterable[str], worker: int | None = None) -> None:
    """Configure the root logger for the gateway process (`worker`: its index, if one of several)."""
    handler = logging.StreamHandler(sys.stderr)
    where = "" if worker is None else f"[worker {worker}] "
    handler.setFormatter(JsonFormatter(worker) if json_lines else logging.Formatter(
        f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("livekit").setLevel(logging.WARNING)
