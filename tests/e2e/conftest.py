"""End-to-end fixtures: a LiveKit target for the whole session, and a per-test harness.

Every e2e test runs in the session's event loop (``pytest.mark.asyncio(loop_scope="session")`` in each module) so
that one loopback server serves them all; each test uses its own room.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from fakes.room_native import FakeVendors
from loopback import LoopbackServer, loopback_host
from tests.e2e.e2e_helpers import LOOPBACK_KEY, LOOPBACK_SECRET, Harness, LiveKitTarget, choose_target
from tests.e2e.room_native_helpers import KEY

_USED = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say up front which LiveKit server the e2e tests use and why (shown when tests/e2e is given on the command
    line; the terminal summary repeats it whenever an e2e test ran)."""
    return [choose_target().message]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    message = config.stash.get(_USED, None)
    if message is not None:
        terminalreporter.write_line(message)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def livekit_target(pytestconfig: pytest.Config) -> AsyncIterator[LiveKitTarget]:
    """(url, key, secret, loopback server or None): a real LiveKit server when LIVEKIT_URL, LIVEKIT_API_KEY and
    LIVEKIT_API_SECRET are set; otherwise one loopback development server (needs ``scripts/netns-run``)."""
    choice = choose_target()
    pytestconfig.stash[_USED] = choice.message
    if choice.real:
        yield LiveKitTarget(os.environ["LIVEKIT_URL"], os.environ["LIVEKIT_API_KEY"],
                            os.environ["LIVEKIT_API_SECRET"], None)
        return
    if choice.skip_reason is not None:
        pytest.skip(choice.skip_reason)
    async with LoopbackServer(loopback_host(), 0, LOOPBACK_KEY, LOOPBACK_SECRET) as lk:
        yield LiveKitTarget(lk.url, LOOPBACK_KEY, LOOPBACK_SECRET, lk)


@pytest_asyncio.fixture(loop_scope="session")
async def e2e(livekit_target: LiveKitTarget, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """This test's harness: its own room; gateways, clients and viewers it makes are cleaned up and checked."""
    async with Harness.open(livekit_target, request.node.name.removeprefix("test_")) as harness:
        yield harness


@pytest_asyncio.fixture(loop_scope="session")
async def vendors(e2e: Harness) -> AsyncIterator[FakeVendors]:
    """Fakes of every room-native vendor's API; at the end every vendor session any path started has its worker
    gone."""
    async with FakeVendors(loopback_host(), KEY) as fake:
        yield fake
        await fake.wait_until(lambda f: not f.running())
