"""The fake Simli server: ``/compose/token``, ``/compose/ice`` and the P2P websocket, on an aiohttp server.

    async with FakeSimli(loopback_host(), 0, api_keys={"key"}, faces={"face"}) as fake:
        client = SimliClient("key", SimliConfig(faceId="face"), simliURL=fake.url, retry_count=1,
                             transport_mode=TransportMode.P2P)

HTTP errors, as Simli's FastAPI service answers them and simli-ai reads them (``SimliAPIError.status_code`` /
``.code``): a missing or unknown API key -> ``401 {"detail": "INVALID_API_KEY"}`` (code INVALID_API_KEY); a key in
``billing_blocked`` -> ``402 {"detail": billing_detail}`` (code BILLING_ERROR: a 402 always is); a body FastAPI would
refuse -> ``422 {"detail": [{"type", "loc", "msg", "input"}...]}`` (code UNKNOWN_ERROR, detail the JSON of the list);
a face not in ``faces`` -> ``invalid_face_status`` (400) ``{"detail": "INVALID_FACE_ID"}`` (code INVALID_FACE_ID);
``fail_token`` / ``fail_ice`` inject any other answer (e.g. a 503 outage: retryable).

A websocket with an unknown, used or expired token (``token_lifetime``) is refused: upgraded, then
``ERROR: Invalid session token`` and closed (SimliSessionError), or with ``invalid_token_status`` set, an HTTP error
on the upgrade (SimliAPIError with that status, code UNKNOWN_ERROR: simli-ai gives the websocket's errors no code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from aiohttp import WSCloseCode, web

from . import protocol as p
from .changes import Changes
from .media import RendererCache
from .session import FakeSimliSession, SessionOptions
from .token_request import SessionParams, parse_token_body, validate_token_body

__all__ = ["FakeSimli", "InjectedFailure", "TokenRequest"]

logger = logging.getLogger("fakes.simli")


@dataclass
class InjectedFailure:
    """An answer to give instead of the real one: JSON ``{"detail": detail}``, or ``text`` as is."""

    status: int
    detail: Any = None
    text: str | None = None
    remaining: int = 1

    def response(self) -> web.Response:
        if self.text is not None:
            return web.Response(status=self.status, text=self.text)
        detail = self.detail
        if detail is None:
            detail = _reason(self.status)
        return web.json_response({"detail": detail}, status=self.status)


@dataclass(frozen=True)
class TokenRequest:
    """One ``POST /compose/token``: the key it carried, its body (None when not JSON), the status answered."""

    at: float
    api_key: str | None
    body: Any
    status: int
    detail: Any = None


@dataclass(frozen=True)
class _IssuedToken:
    api_key: str
    config: dict[str, Any]
    params: SessionParams
    issued_at: float


@dataclass
class _FailureQueue:
    failures: deque[InjectedFailure] = field(default_factory=deque)

    def add(self, failure: InjectedFailure) -> None:
        self.failures.append(failure)

    def next(self) -> InjectedFailure | None:
        if not self.failures:
            return None
        failure = self.failures[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            self.failures.popleft()
        return failure


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


STATE_PATH = "/_fake/state"  # the fake's own: its sessions, for a test driving it from another process


class FakeSimli:
    """A local Simli for the real ``simli-ai`` client (P2P transport). Knobs are plain attributes, read when a
    request (token knobs) or a websocket (session knobs) arrives."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_keys: Iterable[str] = ("fake-simli-key",),
                 faces: Iterable[str] | None = None, billing_blocked: Iterable[str] = (), fps: float = 30.0,
                 width: int = 512, height: int = 512, start_delay: float = 0.0, start_reply: str | None = p.START,
                 silence_threshold: int = 0, blink: bool = True, start_after_connected: bool = True,
                 token_lifetime: float | None = None,
                 invalid_token_status: int | None = None, invalid_face_status: int = 400,
                 billing_detail: str = "Insufficient credits, please top up your account",
                 ice_servers: list[dict[str, Any]] | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.api_keys: set[str] = set(api_keys)
        self.faces: set[str] | None = None if faces is None else set(faces)  # None: every face id exists
        self.billing_blocked: set[str] = set(billing_blocked)
        # Session knobs (each session takes them when its websocket opens).
        self.fps = fps
        self.width = width
        self.height = height
        self.start_delay = start_delay  # seconds between the connection (or the answer) and the start reply
        self.start_reply = start_reply  # "START"; "RATE LIMIT" / "ERROR: ..." end the session; None: never
        self.silence_threshold = silence_threshold  # |sample| <= this is silence (for SPEAK / SILENT)
        self.blink = blink
        # Wait for the peer connection to be up before the start reply (else an ERROR / RATE LIMIT reply races the
        # client's setRemoteDescription and it raises a plain SimliError instead of the SimliSessionError).
        self.start_after_connected = start_after_connected
        # Token / HTTP knobs.
        self.token_lifetime = token_lifetime  # seconds a token may wait for its websocket (None: forever)
        self.invalid_token_status = invalid_token_status  # None: ERROR text on the websocket; else refuse the upgrade
        self.invalid_face_status = invalid_face_status
        self.billing_detail = billing_detail
        self.ice_servers: list[dict[str, Any]] = list(ice_servers or [])  # never a public STUN server in tests

        # Counters and history.
        self.sessions: list[FakeSimliSession] = []
        self.token_requests: list[TokenRequest] = []
        self.ice_requests = 0
        self.rejected_tokens: list[str] = []

        self._token_failures = _FailureQueue()
        self._ice_failures = _FailureQueue()
        self._tokens: dict[str, _IssuedToken] = {}
        self._renderers = RendererCache()
        self._changes = Changes()
        self._runner: web.AppRunner | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """What ``SimliClient(simliURL=...)`` takes: ``http://host:port`` (the client derives ``ws://`` from it)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(p.TOKEN_PATH, self._token)
        app.router.add_get(p.ICE_PATH, self._ice)
        app.router.add_get(p.P2P_PATH, self._p2p)
        app.router.add_get(STATE_PATH, self._state)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        sockets: tuple[Any, ...] = tuple(getattr(site._server, "sockets", None) or ())
        if not sockets:
            raise RuntimeError("the fake Simli server has no listening socket")
        self.port = int(sockets[0].getsockname()[1])
        await self._renderers.get(self.width, self.height)  # the default face, built once, off the loop
        return self

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline for the wait
        """End every open session (cause SERVER_CLOSED, close code 1001), then stop the server."""
        self._closing = True
        try:
            for session in self.sessions:
                if session.is_open and not session.ending:
                    session._request_end(p.StopCause.SERVER_CLOSED, (), close_code=WSCloseCode.GOING_AWAY)
            pending = [session.closed.wait() for session in self.sessions if not session.closed.is_set()]
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            await self._renderers.close()
            self._changes.notify()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- counters and waiting ----------------------------------------------------------------------------------------
    @property
    def open_sessions(self) -> int:
        """Sessions whose websocket or peer connection is still open."""
        return sum(1 for session in self.sessions if session.is_open)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> None:
        """Wait (bounded) until ``predicate()`` holds; every change of the server or a session re-checks it."""
        await self._changes.wait_for(predicate, timeout)

    async def wait_open_sessions(
        self,
        count: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> None:
        await self.wait_for(lambda: self.open_sessions == count, timeout)

    async def wait_session(
        self,
        index: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> FakeSimliSession:
        """The ``index``-th session (0 the first), once its websocket opened."""
        await self.wait_for(lambda: len(self.sessions) > index, timeout)
        return self.sessions[index]

    # -- failure injection ---------------------------------------------------------------------------------------------
    def fail_token(self, status: int, detail: Any = None, *, times: int = 1, text: str | None = None) -> None:
        """Answer the next ``times`` token requests with ``status`` and ``{"detail": detail}`` (or ``text``)."""
        self._token_failures.add(InjectedFailure(status, detail, text, times))

    def fail_ice(self, status: int, detail: Any = None, *, times: int = 1, text: str | None = None) -> None:
        """Answer the next ``times`` ICE requests so."""
        self._ice_failures.add(InjectedFailure(status, detail, text, times))

    # -- HTTP ----------------------------------------------------------------------------------------------------------
    def _key_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get(p.API_KEY_HEADER) not in self.api_keys:
            return web.json_response({"detail": p.INVALID_API_KEY}, status=401)
        return None

    async def _state(self, request: web.Request) -> web.Response:
        """The sessions (``?open=N`` first waits, bounded by ``timeout`` seconds, until N are open)."""
        want = request.query.get("open")
        if want is not None:
            with contextlib.suppress(TimeoutError):
                await self.wait_open_sessions(int(want), float(request.query.get("timeout", "10")))
        return web.json_response({
            "open_sessions": self.open_sessions,
            "sessions": [{"stop_cause": None if s.stop_cause is None else str(s.stop_cause), "open": s.is_open,
                          "received_audio_bytes": s.received_audio_bytes} for s in self.sessions],
        })

    async def _token(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        api_key = request.headers.get(p.API_KEY_HEADER)
        raw = await request.read()
        body, errors = parse_token_body(raw)

        def answer(response: web.Response, detail: Any = None) -> web.Response:
            self.token_requests.append(TokenRequest(now, api_key, body, response.status, detail))
            self._changes.notify()
            return response

        failure = self._token_failures.next()
        if failure is not None:
            return answer(failure.response(), failure.detail if failure.text is None else failure.text)
        if (refused := self._key_error(request)) is not None:
            return answer(refused, p.INVALID_API_KEY)
        if errors:
            return answer(web.json_response({"detail": errors}, status=422), errors)
        params = validate_token_body(body, default_width=self.width, default_height=self.height)
        if isinstance(params, list):
            return answer(web.json_response({"detail": params}, status=422), params)
        if api_key in self.billing_blocked:
            return answer(web.json_response({"detail": self.billing_detail}, status=402), self.billing_detail)
        if self.faces is not None and params.face_id not in self.faces:
            return answer(web.json_response({"detail": p.INVALID_FACE_ID}, status=self.invalid_face_status),
                          p.INVALID_FACE_ID)
        assert api_key is not None and isinstance(body, dict)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = _IssuedToken(api_key, body, params, now)
        return answer(web.json_response({"session_token": token, "warnings": []}))

    async def _ice(self, request: web.Request) -> web.Response:
        self.ice_requests += 1
        self._changes.notify()
        failure = self._ice_failures.next()
        if failure is not None:
            return failure.response()
        if (refused := self._key_error(request)) is not None:
            return refused
        return web.json_response(self.ice_servers)

    # -- the websocket -------------------------------------------------------------------------------------------------
    def _take_token(self, token: str) -> _IssuedToken | None:
        issued = self._tokens.pop(token, None)  # a token opens one session
        if issued is None:
            return None
        if self.token_lifetime is not None:
            age = asyncio.get_running_loop().time() - issued.issued_at
            if age >= self.token_lifetime:  # 0: every token has expired by the time its websocket opens
                return None
        return issued

    async def _p2p(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("session_token", "")
        issued = None if self._closing else self._take_token(token)
        if issued is None:
            self.rejected_tokens.append(token)
            self._changes.notify()
            if self.invalid_token_status is not None:
                return web.Response(status=self.invalid_token_status, text=p.INVALID_SESSION_TOKEN)
            ws = web.WebSocketResponse(timeout=5.0)
            await ws.prepare(request)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(p.ERROR_PREFIX + p.INVALID_SESSION_TOKEN)
            await ws.close()
            return ws
        options = SessionOptions(fps=self.fps, start_delay=self.start_delay, start_reply=self.start_reply,
                                 silence_threshold=self.silence_threshold, blink=self.blink,
                                 start_after_connected=self.start_after_connected)
        session = FakeSimliSession(index=len(self.sessions), token=token, api_key=issued.api_key,
                                   config=issued.config, params=issued.params, options=options,
                                   renderers=self._renderers, changes=self._changes)
        self.sessions.append(session)
        self._changes.notify()
        return await session.serve(request)
