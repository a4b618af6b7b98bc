"""Keyframe's framed audio stream: only the PCM records are audio, whatever the chunking."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.framed_audio import MAX_RECORD, FramedAudio, FramingError


def record(kind: int, payload: bytes) -> bytes:
    return struct.pack("<BI", kind, len(payload)) + payload


def test_audio_records_are_joined_and_cues_skipped_across_any_chunking() -> None:
    pcm = bytes(range(256)) * 8
    cue = json.dumps({"emotion": "happy", "at": 100}).encode()
    stream = record(1, pcm[:1000]) + record(2, cue) + record(1, pcm[1000:]) + record(7, b"future")
    for size in (1, 3, 5, 64, len(stream)):
        framed = FramedAudio()
        out = b"".join(framed.feed(stream[i:i + size]) for i in range(0, len(stream), size))
        assert out == pcm and framed.cues == 2 and framed.leftover == 0


def test_an_incomplete_record_is_held_and_reported() -> None:
    framed = FramedAudio()
    assert framed.feed(record(1, b"\x01\x02\x03\x04")[:-1]) == b""
    assert framed.leftover == 8


def test_an_oversized_record_is_a_corrupt_stream() -> None:
    with pytest.raises(FramingError):
        FramedAudio().feed(struct.pack("<BI", 1, MAX_RECORD + 1))
