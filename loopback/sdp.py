"""The little SDP reading and rewriting the server needs on top of aiortc."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

RID_EXTENSION_URIS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


@dataclass
class MediaSection:
    index: int
    kind: str
    mid: str
    direction: str = "sendrecv"
    msid_track: str | None = None
    rid_extmaps: list[str] = field(default_factory=list)

    @property
    def sends(self) -> bool:
        """True when the side that wrote this SDP sends media in this section."""
        return self.direction in ("sendonly", "sendrecv")

    @property
    def receives(self) -> bool:
        return self.direction in ("recvonly", "sendrecv")


def _split(sdp: str) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    media: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def parse_sections(sdp: str) -> list[MediaSection]:
    """Each m-section's kind, mid, direction, msid track id and RID header-extension lines."""
    _, media = _split(sdp)
    out: list[MediaSection] = []
    for index, lines in enumerate(media):
        kind = lines[0][2:].split(" ", 1)[0]
        section = MediaSection(index=index, kind=kind, mid=str(index))
        ssrc_msid: str | None = None
        for line in lines[1:]:
            if line.startswith("a=mid:"):
                section.mid = line[len("a=mid:") :].strip()
            elif line.strip() in ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive"):
                section.direction = line.strip()[2:]
            elif line.startswith("a=msid:"):
                bits = line[len("a=msid:") :].split()
                if len(bits) >= 2:
                    section.msid_track = bits[1]
            elif line.startswith("a=ssrc:") and " msid:" in line:
                bits = line.split(" msid:", 1)[1].split()
                if len(bits) >= 2:
                    ssrc_msid = bits[1]
            elif line.startswith("a=extmap:") and any(uri in line for uri in RID_EXTENSION_URIS):
                section.rid_extmaps.append(line.strip())
        if section.msid_track is None:
            section.msid_track = ssrc_msid
        if kind == "application":
            section.direction = "sendrecv"
        out.append(section)
    return out


def add_rid_extmaps(answer_sdp: str, offer_sdp: str) -> str:
    """Copy the offer's RID header extensions into the answer's video sections.

    libwebrtc offers simulcast with ``a=rid`` lines; aiortc answers without simulcast, so the client sends
    one layer, but unless the RID extensions are echoed the client's NEXT offer fails ("negotiates
    simulcast but does not negotiate the RID RTP header extension").
    """
    offered = {s.mid: s for s in parse_sections(offer_sdp)}
    session, media = _split(answer_sdp)
    for lines in media:
        if not lines[0].startswith("m=video"):
            continue
        mid = next((ln[len("a=mid:") :].strip() for ln in lines if ln.startswith("a=mid:")), None)
        section = offered.get(mid or "")
        if section is None or not section.rid_extmaps:
            continue
        missing = [ext for ext in section.rid_extmaps if ext not in lines]
        if not missing:
            continue
        last = max((i for i, ln in enumerate(lines) if ln.startswith("a=extmap:")), default=0)
        lines[last + 1 : last + 1] = missing
    out = session + [ln for lines in media for ln in lines]
    return "\r\n".join(out) + "\r\n"


def parse_trickle(candidate_init: str) -> RTCIceCandidate | None:
    """A client's trickled ``candidateInit`` JSON as an aiortc candidate, or None when unusable.

    Only UDP IPv4 candidates are kept: aioice gathers nothing else here, so nothing else can pair.
    """
    try:
        data = json.loads(candidate_init)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    text = str(data.get("candidate") or "")
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    if not text:
        return None
    try:
        candidate = candidate_from_sdp(text)
    except (AssertionError, ValueError, IndexError):
        return None
    if candidate.protocol.lower() != "udp" or ":" in candidate.ip or candidate.ip.endswith(".local"):
        return None
    mid = data.get("sdpMid")
    index = data.get("sdpMLineIndex")
    candidate.sdpMid = str(mid) if mid is not None else None
    candidate.sdpMLineIndex = int(index) if isinstance(index, int) else None
    return candidate
