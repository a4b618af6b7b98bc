"""Run one benchmark by name: `./run bench NAME [ARGS...]`; without a name, list them.

Benchmarks that cross a room (they need WebRTC) are started inside the network namespace (scripts/netns-run).
Figures and the commands that produced them are in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BENCHMARKS: dict[str, tuple[str, bool]] = {
    # name: (what it measures, needs the network namespace)
    "gateway_load": ("gateway hop latency and CPU under N concurrent audio streams", False),
    "grpc_floor": ("the same streams against a StreamAudio that does nothing (the transport floor)", False),
    "render_mock": ("the mock provider's cost per 640x480 frame", False),
    "av_sync": ("first avatar frame, A/V offset, interrupt and drift at a real viewer", True),
    "capacity": ("concurrent 640x480@30 sessions one gateway process sustains", True),
    "forwarding_cost": ("the loopback server's CPU per forwarded track (1 publisher, N subscribers)", True),
    "simli_cost": ("gateway CPU, RSS and latencies per Simli session (fake Simli) beside the mock; RSS soak", True),
    "three_paths": ("speech to a viewer: direct vs stock AvatarRunner vs the gateway, side by side", True),
    "vendor_paths": ("speech through a room-native vendor: relayed by the gateway vs direct vs no avatar", True),
    "agent_paths": ("an AgentSession through the plugin vs the stock DataStream path: first frame, say() return", True),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: ./run bench NAME [ARGS...]   (NAME --help for its options)\n")
        for name, (what, _) in BENCHMARKS.items():
            print(f"  {name:<13} {what}")
        return 0 if not argv else 2
    name, args = argv[0], argv[1:]
    command = [sys.executable, "-m", f"bench.{name}", *args]
    if BENCHMARKS[name][1] and os.environ.get("LOOPBACK_NETNS") != "1":
        command = [str(ROOT / "scripts" / "netns-run"), *command]
    os.chdir(ROOT)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
