"""Data packets, byte streams and RPC (the avatar protocol's transport) through the loopback server."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit import api, rtc

from loopback import LoopbackServer
from tests.loopback.loopback_helpers import TIMEOUT, ConnectFn, requires_netns

pytestmark = requires_netns


def _payloads(client_log: list[tuple[str, tuple[object, ...]]]) -> list[bytes]:
    return [args[0].data for name, args in client_log if name == "data_received"]  # type: ignore[attr-defined]


async def test_data_packets_honour_destinations(connect: ConnectFn) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    await alice.local.publish_data(b"to-bob", destination_identities=["bob"], topic="t1")
    await alice.local.publish_data(b"lossy-to-carol", reliable=False, destination_identities=["carol"])
    await alice.local.publish_data(b"to-all", topic="t2")
    (packet,) = await bob.events.wait("data_received", lambda p: p.data == b"to-bob")
    assert packet.participant is not None and packet.participant.identity == "alice"
    assert packet.topic == "t1"
    await bob.events.wait("data_received", lambda p: p.data == b"to-all")
    await carol.events.wait("data_received", lambda p: p.data == b"to-all")
    # Reliable packets are ordered: had "to-bob" gone to carol it would have arrived before "to-all".
    assert b"to-bob" not in _payloads(carol.events.log)
    assert b"lossy-to-carol" not in _payloads(bob.events.log)
    assert not [name for name, _ in alice.events.log if name == "data_received"]


async def test_can_publish_data_false_cannot_send(server: LoopbackServer, connect: ConnectFn) -> None:
    quiet = await connect("quiet", grants=api.VideoGrants(room_join=True, room="room", can_publish_data=False))
    talker = await connect("talker")
    listener = await connect("listener")
    await quiet.local.publish_data(b"forbidden")
    await server.wait_for(lambda s: s.extra["data_packets_dropped"] >= 1)
    await talker.local.publish_data(b"marker")
    await listener.events.wait("data_received", lambda p: p.data == b"marker")
    assert b"forbidden" not in _payloads(listener.events.log)
    # A participant without data rights still receives data.
    await quiet.events.wait("data_received", lambda p: p.data == b"marker")


async def test_rpc_round_trips(connect: ConnectFn) -> None:
    agent = await connect("agent", kind="agent")
    avatar = await connect("avatar", kind="agent", attributes={"lk.publish_on_behalf": "agent"})
    finished: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    async def clear_buffer(data: rtc.RpcInvocationData) -> str:
        assert data.caller_identity == "agent"
        return "ok"

    def playback_finished(data: rtc.RpcInvocationData) -> str:
        finished.set_result({"caller": data.caller_identity, **json.loads(data.payload)})
        return ""

    avatar.local.register_rpc_method("lk.clear_buffer", clear_buffer)
    agent.local.register_rpc_method("lk.playback_finished", playback_finished)
    reply = await agent.local.perform_rpc(destination_identity="avatar", method="lk.clear_buffer", payload="")
    assert reply == "ok"
    payload = json.dumps({"playback_position": 1.25, "interrupted": True})
    reply = await avatar.local.perform_rpc(destination_identity="agent", method="lk.playback_finished", payload=payload)
    assert reply == ""
    assert await asyncio.wait_for(finished, TIMEOUT) == {
        "caller": "avatar",
        "playback_position": 1.25,
        "interrupted": True,
    }
    with pytest.raises(rtc.RpcError) as info:
        await agent.local.perform_rpc(destination_identity="avatar", method="lk.nope", payload="")
    assert info.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD


async def test_audio_byte_stream_reaches_only_its_destination(connect: ConnectFn) -> None:
    agent = await connect("agent", kind="agent")
    avatar = await connect("avatar")
    bystander = await connect("bystander")
    loop = asyncio.get_running_loop()
    received: asyncio.Future[tuple[str, dict[str, str], bytes]] = loop.create_future()
    bystander_streams: list[str] = []
    readers: list[asyncio.Task[None]] = []

    async def read(reader: rtc.ByteStreamReader, sender: str) -> None:
        data = b"".join([chunk async for chunk in reader])
        received.set_result((sender, dict(reader.info.attributes or {}), data))

    def on_stream(reader: rtc.ByteStreamReader, sender: str) -> None:
        readers.append(asyncio.ensure_future(read(reader, sender)))

    avatar.room.register_byte_stream_handler("lk.audio_stream", on_stream)
    bystander.room.register_byte_stream_handler(
        "lk.audio_stream", lambda reader, sender: bystander_streams.append(sender)
    )
    pcm = bytes(range(256)) * 250  # 64000 bytes: 2 s of 16 kHz mono PCM16, several chunks
    writer = await agent.local.stream_bytes(
        "segment-1",
        topic="lk.audio_stream",
        destination_identities=["avatar"],
        attributes={"sample_rate": "16000", "num_channels": "1"},
    )
    for i in range(0, len(pcm), 6400):
        await writer.write(pcm[i : i + 6400])
    await writer.aclose()
    sender, attributes, data = await asyncio.wait_for(received, TIMEOUT)
    assert sender == "agent"
    assert attributes["sample_rate"] == "16000" and attributes["num_channels"] == "1"
    assert data == pcm
    await agent.local.publish_data(b"marker")
    await bystander.events.wait("data_received", lambda p: p.data == b"marker")
    assert bystander_streams == []
    await asyncio.gather(*readers)
