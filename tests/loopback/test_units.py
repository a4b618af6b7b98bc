"""Pieces of the loopback server that need no network namespace: SDP helpers, token checks, netns probe."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models

from loopback import auth, netns
from loopback.sdp import add_rid_extmaps, parse_sections, parse_trickle
from tests.loopback.loopback_helpers import API_KEY, API_SECRET

OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=recvonly",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:1",
        "a=sendonly",
        "a=msid:- TR_cid_video",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=rid:q send",
        "a=simulcast:send q",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:2",
        "",
    ]
)
ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3 3 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=inactive",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=mid:1",
        "a=recvonly",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:2",
        "",
    ]
)


def test_parse_sections_reads_mid_direction_and_msid() -> None:
    sections = parse_sections(OFFER)
    assert [(s.kind, s.mid, s.direction) for s in sections] == [
        ("audio", "0", "recvonly"),
        ("video", "1", "sendonly"),
        ("application", "2", "sendrecv"),
    ]
    assert sections[1].msid_track == "TR_cid_video" and sections[1].sends
    assert len(sections[1].rid_extmaps) == 2


def test_rid_extensions_are_echoed_into_the_answer() -> None:
    patched = add_rid_extmaps(ANSWER, OFFER)
    video = patched.split("m=video", 1)[1].split("m=application", 1)[0]
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in video
    assert "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" in video
    assert patched.count("rtp-stream-id") == 2  # nothing added to audio
    assert add_rid_extmaps(patched, OFFER) == patched


def test_trickle_keeps_only_udp_ipv4() -> None:
    host = "candidate:1 1 udp 2122260223 10.77.0.2 50000 typ host generation 0"
    candidate = parse_trickle(json.dumps({"candidate": host, "sdpMid": "0", "sdpMLineIndex": 0}))
    assert candidate is not None and (candidate.ip, candidate.port, candidate.sdpMid) == ("10.77.0.2", 50000, "0")
    tcp = "candidate:2 1 tcp 1518280447 10.77.0.2 9 typ host tcptype active"
    v6 = "candidate:3 1 udp 2122262783 fe80::1 50001 typ host"
    for text in (tcp, v6, ""):
        assert parse_trickle(json.dumps({"candidate": text, "sdpMid": "0"})) is None
    assert parse_trickle("not json") is None


def _token(**grants: object) -> str:
    video = api.VideoGrants(room_join=True, room="r", **grants)  # type: ignore[arg-type]
    return api.AccessToken(API_KEY, API_SECRET).with_identity("id").with_grants(video).to_jwt()


def test_token_checks() -> None:
    keys = {API_KEY: API_SECRET}
    verified = auth.verify_token(_token(), keys)
    assert verified.api_key == API_KEY and auth.check_join(verified) == "r"
    with pytest.raises(auth.AuthError) as info:
        auth.verify_token(_token(), {API_KEY: "another-secret-that-is-long-enough!!"})
    assert info.value.status == 401 and info.value.message.startswith("invalid authorization token")
    with pytest.raises(auth.AuthError) as info:
        auth.verify_token(_token(), {"other": API_SECRET})
    assert info.value.message == "invalid API key"
    expired = (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity("id")
        .with_grants(api.VideoGrants(room_join=True, room="r"))
        .with_ttl(datetime.timedelta(minutes=-5))
        .to_jwt()
    )
    with pytest.raises(auth.AuthError, match="expired"):
        auth.verify_token(expired, keys)
    admin_only = auth.VerifiedToken(API_KEY, Claims(identity="a", video=api.VideoGrants(room_admin=True)))
    with pytest.raises(auth.AuthError, match="permissions denied"):
        auth.check_join(admin_only)


def test_grants_mapping() -> None:
    assert auth.participant_kind("agent") == models.ParticipantInfo.AGENT
    assert auth.participant_kind("") == models.ParticipantInfo.STANDARD
    mic_only = api.VideoGrants(can_publish_sources=["microphone"])
    assert auth.can_publish_source(mic_only, models.MICROPHONE)
    assert not auth.can_publish_source(mic_only, models.CAMERA)
    assert not auth.can_publish_source(api.VideoGrants(can_publish=False), models.MICROPHONE)
    assert auth.can_publish_source(api.VideoGrants(), models.CAMERA)


def test_netns_reason_outside_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPBACK_NETNS", raising=False)
    reason = netns.not_in_namespace_reason()
    assert reason is not None and "scripts/netns-run" in reason
    assert not netns.in_namespace()
    monkeypatch.setenv("LOOPBACK_NETNS", "1")
    monkeypatch.setenv("LOOPBACK_HOST", "192.0.2.123")  # TEST-NET-1, never local
    assert "not an address" in (netns.not_in_namespace_reason() or "")


def test_cli_help_says_development_server() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loopback", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "DEVELOPMENT server" in out and "livekit-server or LiveKit Cloud" in " ".join(out.split())


def test_cli_requires_a_secret() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "loopback", "--port", "0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and "LIVEKIT_API_SECRET" in proc.stderr
