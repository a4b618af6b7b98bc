"""Run the loopback LiveKit-compatible development server: ``python -m loopback --help``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from .server import LoopbackServer

DESCRIPTION = (
    "A LiveKit-compatible DEVELOPMENT server for tests and local development only (it forwards RTP like "
    "livekit-server, without simulcast, congestion control or pacing). Users run the real livekit-server or "
    "LiveKit Cloud. WebRTC ignores loopback interfaces: run it inside scripts/netns-run (default host 10.77.0.1)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loopback", description=DESCRIPTION)
    parser.add_argument("--host", default=os.environ.get("LOOPBACK_HOST", "10.77.0.1"))
    parser.add_argument("--port", type=int, default=7880)
    parser.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", "devkey"))
    parser.add_argument(
        "--api-secret",
        default=None,
        help="API secret (default: $LIVEKIT_API_SECRET); it is never printed",
    )
    parser.add_argument(
        "--no-rtc-v1",
        action="store_true",
        help="answer /rtc/v1 with 404 so clients fall back to the two-peer-connection /rtc path",
    )
    parser.add_argument(
        "--no-sync-streams",
        action="store_true",
        help="give every subscribed track its own media stream (livekit-server's default) instead of one stream "
        "for a participant's camera and microphone (its room.sync_streams)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, secret: str) -> None:
    server = LoopbackServer(
        args.host, args.port, args.api_key, secret, rtc_v1=not args.no_rtc_v1, sync_streams=not args.no_sync_streams
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(
            f"loopback LiveKit-compatible DEVELOPMENT server on {server.url} (api key {args.api_key!r}); "
            "not for production: use livekit-server or LiveKit Cloud",
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    secret = args.api_secret or os.environ.get("LIVEKIT_API_SECRET", "")
    if not secret:
        print("error: an API secret is required (--api-secret or LIVEKIT_API_SECRET)", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args, secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
