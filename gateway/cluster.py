"""Several gateway worker processes behind one listen port.

One Python process is one thread for the gateway's work, so `avatar-gateway serve --workers N` runs N worker
processes that share the public port (SO_REUSEPORT: the kernel spreads connections over them). A session lives in
the worker that started it; an agent's StartSession and StreamAudio travel on one channel, so they meet the same
worker. Any call about a session that lands elsewhere (another channel, grpcurl, a retry on a new connection) is
forwarded over the workers' private Unix sockets, with the caller's credentials, to the owner.

Who owns what is kept in a directory spread over the workers: every session id and StartSession request id has a
home worker (a hash of the key) that records which worker claimed it. Ids the gateway generates are chosen so that
their home is the worker that creates them. A worker that restarts asks the others to record their claims with it
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc

from gateway import errors
from gateway.directory import Claim, Directory, session_key

log = logging.getLogger(__name__)

INTERNAL_SERVICE = "avatar.gateway.internal.v1.Cluster"
INTERNAL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """This worker's place in the gateway: index `index` of `count`, sockets in `run_dir` (mode 0700)."""

    index: int
    count: int
    run_dir: Path

    def socket_path(self, index: int) -> Path:
        """Worker `index`'s private socket."""
        return self.run_dir / f"worker-{index}.sock"

    def target(self, index: int) -> str:
        """The gRPC target of worker `index`'s private socket."""
        return f"unix:{self.socket_path(index)}"


def home(key: str, count: int) -> int:
    """The worker holding `key`'s directory entry."""
    return zlib.crc32(key.encode()) % count


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


class Peers:
    """Channels to the other workers' private sockets, opened on first use."""

    def __init__(self, spec: ClusterSpec, max_message_bytes: int) -> None:
        self.spec = spec
        self._options = [("grpc.max_receive_message_length", max_message_bytes),
                         ("grpc.max_send_message_length", max_message_bytes),
                         # a worker that is (re)starting is back within a second: reconnect that fast
                         ("grpc.initial_reconnect_backoff_ms", 100),
                         ("grpc.min_reconnect_backoff_ms", 100),
                         ("grpc.max_reconnect_backoff_ms", 1000)]
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._stubs: dict[int, pb_grpc.AvatarProviderStub] = {}

    def channel(self, index: int) -> grpc.aio.Channel:
        """The channel to worker `index`."""
        channel = self._channels.get(index)
        if channel is None:
            channel = self._channels[index] = grpc.aio.insecure_channel(self.spec.target(index),
                                                                        options=self._options)
        return channel

    def stub(self, index: int) -> pb_grpc.AvatarProviderStub:
        """The public service of worker `index`."""
        stub = self._stubs.get(index)
        if stub is None:
            stub = self._stubs[index] = pb_grpc.AvatarProviderStub(self.channel(index))  # type: ignore[no-untyped-call]
        return stub

    def others(self) -> list[int]:
        """Every worker index but this one."""
        return [i for i in range(self.spec.count) if i != self.spec.index]

    async def call(self, index: int, method: str, message: dict[str, Any]) -> dict[str, Any]:
        """One internal call; UNAVAILABLE (retryable) if the worker does not answer."""
        rpc = self.channel(index).unary_unary(f"/{INTERNAL_SERVICE}/{method}", request_serializer=_dump,
                                              response_deserializer=json.loads)
        try:
            reply: dict[str, Any] = await rpc(message, timeout=INTERNAL_TIMEOUT_S, wait_for_ready=True)
        except grpc.aio.AioRpcError:
            raise worker_unavailable() from None
        return reply

    async def aclose(self) -> None:
        """Close every channel."""
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()


def worker_unavailable() -> errors.GatewayError:
    """Another worker process did not answer (it may be restarting)."""
    return errors.unavailable("a gateway worker process is not answering; retry shortly", "WORKER_UNAVAILABLE",
                              1.0)


class ClusterDirectory(Directory):
    """This worker's share of the directory, and its view of everyone else's."""

    def __init__(self, spec: ClusterSpec, peers: Peers) -> None:
        self.index = spec.index
        self._count = spec.count
        self._peers = peers
        self._table: dict[str, int] = {}  # entries homed here: key -> owner
        self._mine: set[str] = set()  # keys this worker holds, wherever their entries live
        self._releases: set[asyncio.Task[None]] = set()

    # -- as a key's home ----------------------------------------------------------------------------------------
    def record(self, key: str, owner: int) -> Claim:
        """Record `owner` for `key` unless someone has it already."""
        existing = self._table.get(key)
        if existing is None:
            self._table[key] = owner
            return Claim(owner, created=True)
        return Claim(existing, created=False)

    def drop(self, key: str, owner: int) -> None:
        """Forget `key` if `owner` holds it."""
        if self._table.get(key) == owner:
            del self._table[key]

    def owner_of(self, key: str) -> int | None:
        """The recorded owner of a key homed here."""
        return self._table.get(key)

    # -- as a worker --------------------------------------------------------------------------------------------
    async def claim(self, key: str) -> Claim:
        where = home(key, self._count)
        if where == self.index:
            claim = self.record(key, self.index)
        else:
            reply = await self._peers.call(where, "Claim", {"key": key, "owner": self.index})
            claim = Claim(int(reply["owner"]), bool(reply["created"]))
        if claim.owner == self.index:
            self._mine.add(key)
        return claim

    def release(self, key: str) -> None:
        self._mine.discard(key)
        where = home(key, self._count)
        if where == self.index:
            self.drop(key, self.index)
            return
        task = asyncio.get_running_loop().create_task(self._release(where, key), name="directory-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, where: int, key: str) -> None:
        try:
            await self._peers.call(where, "Release", {"key": key, "owner": self.index})
        except errors.GatewayError:
            log.warning("worker %d did not take back a directory entry", where)

    async def lookup(self, key: str) -> int | None:
        where = home(key, self._count)
        if where == self.index:
            return self.owner_of(key)
        owner = (await self._peers.call(where, "Lookup", {"key": key}))["owner"]
        return None if owner is None else int(owner)

    def new_session_id(self) -> str:
        while True:
            session_id = str(uuid.uuid4())
            if home(session_key(session_id), self._count) == self.index:
                return session_id

    async def reclaim_at(self, index: int) -> None:
        """Record again, with worker `index` (just restarted, its entries lost), every key held here."""
        for key in [k for k in self._mine if home(k, self._count) == index]:
            await self._peers.call(index, "Claim", {"key": key, "owner": self.index})

    async def announce_restart(self) -> None:
        """Ask every other worker that is up to record its keys homed here again (a worker not up yet holds no
        keys)."""
        for peer in self._peers.others():
            if self._peers.spec.socket_path(peer).exists():
                with contextlib.suppress(errors.GatewayError):
                    await self._peers.call(peer, "Reclaim", {"index": self.index})

    async def aclose(self) -> None:
        """Wait for releases still on their way (a worker that does not answer loses its entries anyway)."""
        if not self._releases:
            return
        _, late = await asyncio.wait(list(self._releases), timeout=INTERNAL_TIMEOUT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


def internal_handler(directory: ClusterDirectory) -> grpc.GenericRpcHandler:
    """The directory's RPCs, served on the private socket only."""

    async def claim(req: dict[str, Any], _: object) -> dict[str, Any]:
        c = directory.record(str(req["key"]), int(req["owner"]))
        return {"owner": c.owner, "created": c.created}

    async def release(req: dict[str, Any], _: object) -> dict[str, Any]:
        directory.drop(str(req["key"]), int(req["owner"]))
        return {}

    async def lookup(req: dict[str, Any], _: object) -> dict[str, Any]:
        return {"owner": directory.owner_of(str(req["key"]))}

    async def reclaim(req: dict[str, Any], _: object) -> dict[str, Any]:
        await directory.reclaim_at(int(req["index"]))
        return {}

    methods: dict[str, Callable[[dict[str, Any], object], Awaitable[dict[str, Any]]]] = {
        "Claim": claim, "Release": release, "Lookup": lookup, "Reclaim": reclaim}
    return grpc.method_handlers_generic_handler(INTERNAL_SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=json.loads, response_serializer=_dump)
        for name, fn in methods.items()})
