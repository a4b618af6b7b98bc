"""Local fakes of the room-native vendors' HTTP APIs, each path and body as the vendor's own LiveKit plugin calls
it (providers.room_native.vendors), each start running a `FakeWorker` in the room it was given.

Knobs: `fail_next[vendor] = (status, body)` answers that vendor's next start with an error; `forget_ends` makes
workers never finish a segment; `listen_to` makes workers play that participant's audio whoever the start call
named (a first-agent vendor that found another agent first: with two agents in a room the stock receiver's choice
follows the SDK's unordered participant map); `hold_starts` holds every start's answer until it is set.
`sessions` records every start (the body without its token) and stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.room_native.worker import FakeWorker


@dataclass
class FakeVendorSession:
    """One start call and its worker."""

    vendor: str
    session_id: str
    body: dict[str, Any]
    worker: FakeWorker
    task: asyncio.Task[None] | None = None
    stop_calls: int = 0
    ended: bool = False
    headers: dict[str, str] = field(default_factory=dict)


# path -> (vendor, auth header, scheme, how to read (livekit url, token, named sender, avatar id), id key, rate)
Reader = Callable[[dict[str, Any]], tuple[str, str, str | None, str]]
_ROUTES: dict[str, tuple[str, str, str, Reader, str, int]] = {
    "/v2/conversations": ("tavus", "x-api-key", "", lambda b: (
        b["properties"]["livekit_ws_url"], b["properties"]["livekit_room_token"], None, b["face_id"]),
        "conversation_id", 24000),
    "/v2/agents/{agent}/sessions/join": ("did", "Authorization", "Basic ", lambda b: (
        b["transport"]["server_url"], b["transport"]["token"], None, ""), "id", 24000),
    "/v1/sessions": ("bey", "x-api-key", "", lambda b: (b["url"], b["token"], None, b["avatar_id"]), "id", 16000),
    "/v1/engine/session": ("anam", "Authorization", "Bearer ", lambda b: (
        b["environment"]["livekitUrl"], b["environment"]["livekitToken"], None, b["personaConfig"]["avatarId"]),
        "sessionId", 24000),
    "/integrations/livekit/agents": ("simli-livekit", "", "", lambda b: (
        b["livekit_url"], b["livekit_token"], None, ""), "session_id", 16000),
    "/v1/realtime_sessions": ("runway", "Authorization", "Bearer ", lambda b: (
        b["livekit"]["url"], b["livekit"]["token"], b["livekit"]["agentIdentity"], b["avatar"]["avatarId"]),
        "id", 16000),
    "/api/liveai/sessions": ("lemonslice", "X-API-Key", "", lambda b: (
        b["properties"]["livekit_url"], b["properties"]["livekit_token"], None, b["agent_id"]), "session_id", 24000),
}


class FakeVendors:
    """Every room-native vendor's API on one local port. `async with FakeVendors(host, key) as fake`."""

    def __init__(self, host: str, api_key: str) -> None:
        self.host = host
        self.api_key = api_key
        self.url = ""
        self.sessions: dict[str, FakeVendorSession] = {}
        self.fail_next: dict[str, tuple[int, dict[str, Any]]] = {}
        self.forget_ends = False
        self.listen_to: str | None = None
        self.hold_starts: asyncio.Event | None = None  # set: start calls are answered only once it is set
        self.starts_received = 0
        self._ids = itertools.count(1)
        self._simli_tokens: set[str] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeVendors:
        app = web.Application()
        for path in _ROUTES:
            app.router.add_post(path, self._start)
        app.router.add_post("/compose/token", self._simli_token)
        app.router.add_post("/v2/conversations/{id}/end", self._stop)
        app.router.add_delete("/v1/realtime_sessions/{id}", self._stop)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions.values():
            session.worker.stop_requested.set()
        tasks = [s.task for s in self.sessions.values() if s.task is not None]
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests ask ------------------------------------------------------------------------------------------
    def running(self) -> list[FakeVendorSession]:
        """Sessions whose worker has not left."""
        return [s for s in self.sessions.values() if not s.ended]

    async def wait_until(self, predicate: Callable[[FakeVendors], bool], timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Until `predicate(self)` holds (checked at every change)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the vendors' API ----------------------------------------------------------------------------------------
    def _authorized(self, request: web.Request, header: str, scheme: str) -> bool:
        return not header or request.headers.get(header, "") == scheme + self.api_key

    async def _simli_token(self, request: web.Request) -> web.Response:
        if request.headers.get("x-simli-api-key", "") != self.api_key:
            return web.json_response({"detail": "Invalid API key"}, status=401)
        token = f"simli-session-{next(self._ids)}"
        self._simli_tokens.add(token)
        return web.json_response({"session_token": token})

    async def _start(self, request: web.Request) -> web.Response:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        vendor, header, scheme, read, id_key, rate = _ROUTES[route]
        if not self._authorized(request, header, scheme):
            return web.json_response({"message": "invalid API key"}, status=401)
        body = await request.json()
        self.starts_received += 1
        await self._notify()
        if self.hold_starts is not None:
            await self.hold_starts.wait()
        if vendor == "simli-livekit" and body.get("session_token") not in self._simli_tokens:
            return web.json_response({"detail": "Session Failed"}, status=400)
        failure = self.fail_next.pop(vendor, None)
        if failure is not None:
            return web.json_response(failure[1], status=failure[0])
        url, token, sender, avatar = read(body)
        session_id = f"{vendor}-{next(self._ids)}"
        worker = FakeWorker(url, token, sender=self.listen_to or sender, sample_rate=rate,
                            forget_ends=self.forget_ends)
        recorded = json.loads(json.dumps(body).replace(token, "<token>"))
        session = FakeVendorSession(vendor, session_id, recorded, worker,
                                    headers={k: v for k, v in request.headers.items() if k.lower() != header.lower()})
        session.body["_avatar"] = avatar
        self.sessions[session_id] = session
        session.task = asyncio.ensure_future(self._run(session))
        await self._notify()
        return web.json_response({id_key: session_id, "status": "started"}, status=201)

    async def _run(self, session: FakeVendorSession) -> None:
        try:
            await session.worker.run()
        finally:
            session.ended = True
            await self._notify()

    async def _stop(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.json_response({"message": "no such session"}, status=404)
        session.stop_calls += 1
        session.worker.stop_requested.set()
        await self._notify()
        return web.json_response({"status": "ended"})
