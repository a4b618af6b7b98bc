"""Deterministic, network-free models for a real livekit-agents AgentSession, for tests and benchmarks of agents: a
TTS that voices every word as a fixed stretch of tone, so an utterance's audio length is known exactly, and an LLM
with one fixed answer."""

from __future__ import annotations

from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, llm, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

TTS_RATE = 24000
WORD_S = 0.25  # seconds of tone per word
TONE_HZ = 330.0
AMPLITUDE = 0.5


def utterance_seconds(text: str) -> float:
    """Exactly how long ToneTTS voices `text`."""
    return len(text.split()) * round(WORD_S * TTS_RATE) / TTS_RATE


def tone(seconds: float, rate: int = TTS_RATE) -> bytes:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    return (AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()


class ToneTTS(tts.TTS[None]):
    """Every word is WORD_S seconds of a steady tone (mono, 24 kHz); an empty text is no audio."""

    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=TTS_RATE, num_channels=1)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return _ToneStream(tts=self, input_text=text, conn_options=conn_options)


class _ToneStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id="tone", sample_rate=TTS_RATE, num_channels=1, mime_type="audio/pcm")
        words = len(self.input_text.split())
        if words:
            output_emitter.push(tone(words * round(WORD_S * TTS_RATE) / TTS_RATE))
        output_emitter.flush()


class FixedLLM(llm.LLM[None]):
    """Answers every turn with the same text, in one chunk."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS, **_: Any) -> llm.LLMStream:
        return _FixedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _FixedStream(llm.LLMStream):
    async def _run(self) -> None:
        assert isinstance(self._llm, FixedLLM)
        self._event_ch.send_nowait(llm.ChatChunk(id="fixed", delta=llm.ChoiceDelta(role="assistant",
                                                                                   content=self._llm.reply)))
