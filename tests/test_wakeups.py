"""Shared wake-up slots: a wait never ends before its time, waits in one slot share one timer, early ends are safe."""

from __future__ import annotations

import asyncio

from providers.wakeups import Wakeups


async def test_a_wait_never_ends_before_its_time() -> None:
    loop = asyncio.get_running_loop()
    wakeups = Wakeups(loop, resolution_s=0.005)
    asked = [(loop.time() + d, wakeups.sleep(d)) for d in (0.0, 0.001, 0.004, 0.011, 0.02)]
    for deadline, future in asked:
        await future
        assert loop.time() >= deadline
    assert wakeups.pending_slots == 0


async def test_waits_in_one_slot_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    wakeups = Wakeups(loop, resolution_s=3600.0)
    futures = [wakeups.sleep(0.001 * i) for i in range(100)]
    # every wait of this burst falls in one hour-long slot (in two if the burst straddles a slot boundary)
    assert wakeups.pending_slots <= 2
    for f in futures:
        f.cancel()


async def test_a_wait_ended_early_is_skipped_when_its_slot_fires() -> None:
    loop = asyncio.get_running_loop()
    wakeups = Wakeups(loop, resolution_s=0.005)
    early, cancelled, normal = wakeups.sleep(0.002), wakeups.sleep(0.002), wakeups.sleep(0.002)
    early.set_result(None)  # an interrupt ends the wait at once
    cancelled.cancel()  # the waiting task was cancelled
    await normal
    assert early.done() and cancelled.cancelled() and wakeups.pending_slots == 0


async def test_one_instance_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert Wakeups.for_loop(loop) is Wakeups.for_loop(loop)
