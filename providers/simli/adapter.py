"""The Simli adapter: validates a session's face and options, starts its Simli avatar."""

from __future__ import annotations

from collections.abc import Mapping

from simli import SimliConfig

from providers.base import OptionError, ProviderAdapter, ProviderInfo, ProviderSession, SessionSpec
from providers.simli.link import SimliLink
from providers.simli.session import SimliSession
from providers.simli.settings import SIMLI_INFO, SimliOptions, SimliSettings

MAX_FACE_ID = 128


class SimliProvider(ProviderAdapter):
    """Simli over its P2P transport, republished by the gateway."""

    def __init__(self, settings: SimliSettings) -> None:
        self._settings = settings

    @property
    def info(self) -> ProviderInfo:
        return SIMLI_INFO

    def face_id(self, avatar_id: str) -> str:
        """The face a session uses: its avatar_id, else SIMLI_FACE_ID."""
        return avatar_id or self._settings.face_id

    def validate_options(self, avatar_id: str, options: Mapping[str, str]) -> None:
        SimliOptions.parse(options)
        face = self.face_id(avatar_id)
        if not face:
            raise OptionError("avatar_id", "the simli provider needs a face id: set avatar_id (or SIMLI_FACE_ID "
                                           "on the gateway)", field="avatar_id")
        if len(face) > MAX_FACE_ID or not face.isprintable():
            raise OptionError("avatar_id", "avatar_id is not a Simli face id", field="avatar_id")

    def config(self, face_id: str, options: SimliOptions) -> SimliConfig:
        """The SimliConfig of one Simli session."""
        return SimliConfig(
            faceId=face_id,
            handleSilence=options.handle_silence,
            maxSessionLength=options.max_session_length,
            maxIdleTime=options.max_idle_time,
            streaming_width=options.streaming_width,
            streaming_height=options.streaming_height,
            background_id=options.background_id,
        )

    async def start(self, spec: SessionSpec) -> ProviderSession:
        options = SimliOptions.parse(spec.options)
        config = self.config(self.face_id(spec.avatar_id), options)

        async def connect() -> SimliLink:
            return await SimliLink.open(self._settings, config)

        return await SimliSession.open(connect, options, spec.video)
