"""`avatar-gateway serve`: run the gateway until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from gateway import logs
from gateway.config import GatewayConfig, from_env
from gateway.server import GatewayServer

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-gateway", description="One gRPC API in front of every avatar "
                                     "provider for LiveKit agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway", description=(
        "Run the gateway. LiveKit credentials come from LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
        "(secrets are never taken as flags). Caller API keys come from AVATAR_GATEWAY_API_KEYS "
        "('principal:key[:provider|provider],...'); without them the gateway accepts every caller, so keep it "
        "on a private address."))
    serve.add_argument("--listen", help="host:port to listen on (env AVATAR_GATEWAY_LISTEN; default "
                       f"{GatewayConfig.listen})")
    serve.add_argument("--livekit-url", help="LiveKit server URL (env LIVEKIT_URL)")
    serve.add_argument("--headless", action="store_true", default=None,
                       help="publish nowhere: sessions render, pace and account without LiveKit (development)")
    serve.add_argument("--video-delay-ms", type=int, help="default video delay behind audio, ms (env "
                       "AVATAR_GATEWAY_VIDEO_DELAY_MS; default 0)")
    serve.add_argument("--max-sessions", type=int, help="most concurrent sessions")
    serve.add_argument("--idle-timeout", type=float, dest="default_idle_timeout_s",
                       help="default idle timeout in seconds")
    serve.add_argument("--max-duration", type=float, dest="default_max_duration_s",
                       help="default max session duration in seconds")
    serve.add_argument("--shutdown-grace", type=float, dest="shutdown_grace_s",
                       help="seconds to let buffered speech play out on shutdown")
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--port-file", help="write the bound port to this file once serving")
    return parser


async def serve(config: GatewayConfig, port_file: str | None = None) -> None:
    """Serve until a termination signal."""
    server = GatewayServer(config)
    port = await server.start()
    if port_file:
        await asyncio.to_thread(Path(port_file).write_text, f"{port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("termination signal: shutting down")
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "log_level", "port_file")}
    try:
        config = from_env(**overrides)
    except ValueError as exc:
        print(f"avatar-gateway: {exc}", file=sys.stderr)
        return 2
    logs.setup(json_lines=config.log_json, level=args.log_level,
               secrets=[config.livekit_api_secret, *config.api_keys])
    asyncio.run(serve(config, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
