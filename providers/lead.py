"""How much audio a paced publisher keeps queued ahead of playout, derived from how late it actually wakes up.

The publisher pulls its next frame when less than the lead is queued, so the lead must cover the publisher's own
late wake-ups (a busy event loop, a garbage collection, the machine): a wake-up later than the lead lets the audio
queue run dry. Every byte of lead is also latency the agent's first word waits behind. A fixed lead is a guess
tuned to one machine; this one is measured per session:

- every timed wake-up reports its lateness; the lead is `floor_s` plus the worst lateness seen in the current
  and the previous window, never above the cap. It grows at once after a stall and comes back down one to two
  windows after the last one;
- it starts at the floor: a session's first words come soon after it starts, and a stall before anything was
  measured costs nothing audible while the avatar is idle (its queue holds silence); the idle frames paced from
  the start measure the lateness before the first word.
"""

from __future__ import annotations

WINDOW_S = 2.0


class AdaptiveLead:
    """The lead of one publisher. `now` values are seconds on one monotonic clock."""

    def __init__(self, floor_s: float, cap_s: float, now: float, window_s: float = WINDOW_S) -> None:
        self._floor = min(floor_s, cap_s)
        self._cap = cap_s
        self._window = window_s
        self._window_end = now + window_s
        self._current = 0.0  # worst lateness in the current window
        self._previous = 0.0  # worst lateness in the window before
        self.worst_s = 0.0  # worst lateness over the publisher's life
        self.lead_s = self._floor

    def observe(self, lateness_s: float, now: float) -> None:
        """A timed wake-up ran `lateness_s` after the time it asked for."""
        if now >= self._window_end:
            # the last window measured, even when windows with no wake-up at all (nothing paced) came between
            self._previous = self._current
            self._current = 0.0
            self._window_end = now + self._window
        self._current = max(self._current, lateness_s)
        self.worst_s = max(self.worst_s, lateness_s)
        self.lead_s = min(self._cap, self._floor + max(self._current, self._previous))
