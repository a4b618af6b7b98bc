"""Keyframe's framed `lk.audio_stream` (stream attribute `kfl.framing` = "1"): records of `type u8 | length u32 LE |
payload`, type 0x01 PCM16LE 24 kHz mono audio, 0x02 UTF-8 JSON cues (`{"emotion": ..., "at": ...}`). Only the
audio is played; cues and unknown record types are skipped by their length, never played as sound. A record longer
than MAX_RECORD bytes is a corrupt stream (FramingError)."""

from __future__ import annotations

import struct

from providers.base import PcmFormat

FRAMING_ATTRIBUTE = "kfl.framing"
FRAMED_FORMAT = PcmFormat(24000, 1)
AUDIO_RECORD = 0x01
MAX_RECORD = 1 << 20
_HEADER = struct.Struct("<BI")


class FramingError(Exception):
    """The framed stream cannot be read."""


class FramedAudio:
    """Takes a framed stream's chunks as they come (a record may span chunks); gives back the PCM in them."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self.cues = 0  # non-audio records skipped

    def feed(self, chunk: bytes) -> bytes:
        """The audio payload bytes completed by `chunk`, in order (b"" if none)."""
        pending = self._pending
        pending += chunk
        audio = bytearray()
        start = 0
        while len(pending) - start >= _HEADER.size:
            kind, length = _HEADER.unpack_from(pending, start)
            if length > MAX_RECORD:
                raise FramingError(f"a framed record of {length} bytes (at most {MAX_RECORD})")
            end = start + _HEADER.size + length
            if end > len(pending):
                break
            if kind == AUDIO_RECORD:
                audio += pending[start + _HEADER.size:end]
            else:
                self.cues += 1
            start = end
        del pending[:start]
        return bytes(audio)

    @property
    def leftover(self) -> int:
        """Bytes of an incomplete record held at the end."""
        return len(self._pending)
