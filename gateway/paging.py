"""ListSessions order and page tokens: newest first by (create time, name), the same in one process or across
several worker processes, so a page token names a position every process understands."""

from __future__ import annotations

import base64

from avatar.v1 import session_pb2 as pb

from gateway import errors

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50

ListKey = tuple[int, str]  # (create time in ns since the epoch, session name)


def page_size(requested: int) -> int:
    """The page size to use, or INVALID_ARGUMENT."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise errors.invalid_argument("page_size", f"page_size must be 0 to {MAX_PAGE_SIZE}", "INVALID_PAGE_SIZE")
    return requested or DEFAULT_PAGE_SIZE


def key_of(session: pb.Session) -> ListKey:
    """A listed session's position."""
    return session.create_time.ToNanoseconds(), session.name


def encode_token(key: ListKey, show_ended: bool) -> str:
    """The token of the page that starts after `key`, for calls with this `show_ended` (AIP-158: a token is only
    good with the other fields of the call that produced it)."""
    return base64.urlsafe_b64encode(f"v3:{int(show_ended)}:{key[0]}:{key[1]}".encode()).decode()


def decode_token(token: str, show_ended: bool) -> ListKey | None:
    """The position a token starts after; None for the first page; INVALID_ARGUMENT for a token not ours or one
    issued for another `show_ended`."""
    if not token:
        return None
    try:
        kind, ended, ns, name = base64.urlsafe_b64decode(token.encode()).decode().split(":", 3)
        if kind != "v3" or ended not in ("0", "1"):
            raise ValueError
        key = int(ns), name
    except (ValueError, UnicodeDecodeError):
        raise errors.invalid_argument("page_token", "page_token is not one this gateway issued",
                                      "INVALID_PAGE_TOKEN") from None
    if ended != str(int(show_ended)):
        raise errors.invalid_argument("page_token", f"page_token was issued for show_ended={ended == '1'}; call "
                                      "again with the same show_ended, or without page_token", "PAGE_TOKEN_MISMATCH")
    return key


def merge(pages: list[list[pb.Session]], size: int, more: bool, show_ended: bool) -> tuple[list[pb.Session], str]:
    """Several processes' pages (each in list order, cut at `size`) as one page and its next token. `more`: some
    process had rows past its own page."""
    rows = sorted((s for page in pages for s in page), key=key_of, reverse=True)
    page = rows[:size]
    token = encode_token(key_of(page[-1]), show_ended) if page and (more or len(rows) > size) else ""
    return page, token
