"""ListSessions: newest first, paged without gaps or repeats, ended sessions only when asked for."""

from __future__ import annotations

from agent_client import AvatarGatewayClient
from tests.conftest import start_mock


async def all_pages(client: AvatarGatewayClient, page_size: int, show_ended: bool) -> list[list[str]]:
    """Every page's session names, following next_page_token to the end."""
    pages: list[list[str]] = []
    token = ""
    while True:
        sessions, token = await client.list_sessions_page(page_size=page_size, page_token=token,
                                                          show_ended=show_ended)
        pages.append([s.name for s in sessions])
        if not token:
            return pages


async def test_pages_cover_every_session_once_newest_first(client: AvatarGatewayClient) -> None:
    names = [await start_mock(client, session_id=f"s-{i}") for i in range(7)]
    for name in names[1::3]:
        await client.end_session(name)
    live = [n for i, n in enumerate(names) if i % 3 != 1]

    pages = await all_pages(client, 3, show_ended=True)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [n for p in pages for n in p] == names[::-1]

    pages = await all_pages(client, 2, show_ended=False)
    assert [n for p in pages for n in p] == live[::-1]
    assert all(len(p) == 2 for p in pages[:-1])

    assert await all_pages(client, 50, show_ended=True) == [names[::-1]]
