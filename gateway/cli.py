"""`avatar-gateway serve`: run the gateway until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from gateway import logs
from gateway.cluster import ClusterSpec
from gateway.config import GatewayConfig, from_env
from gateway.env_secrets import load_file_secrets
from gateway.server import GatewayServer
from gateway.supervisor import Supervisor

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatar-gateway", description="One gRPC API in front of every avatar "
                                     "provider for LiveKit agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway", description=(
        "Run the gateway. LiveKit credentials come from LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
        "(secrets are never taken as flags). Caller API keys come from AVATAR_GATEWAY_API_KEYS "
        "('principal:key[:provider|provider],...'); without them the gateway accepts every caller, so keep it "
        "on a private address. Any secret can come from a file instead: NAME_FILE=/path (LIVEKIT_API_KEY_FILE, "
        "LIVEKIT_API_SECRET_FILE, AVATAR_GATEWAY_API_KEYS_FILE, SIMLI_API_KEY_FILE)."))
    serve.add_argument("--listen", help="host:port to listen on (env AVATAR_GATEWAY_LISTEN; default "
                       f"{GatewayConfig.listen})")
    serve.add_argument("--livekit-url", help="LiveKit server URL (env LIVEKIT_URL)")
    serve.add_argument("--headless", action="store_true", default=None,
                       help="publish nowhere: sessions render, pace and account without LiveKit (development)")
    serve.add_argument("--video-delay-ms", type=int, help="default video delay behind audio, ms (env "
                       "AVATAR_GATEWAY_VIDEO_DELAY_MS; default 0)")
    serve.add_argument("--max-sessions", type=int, help="most concurrent sessions")
    serve.add_argument("--max-sessions-per-caller", type=int, help="most concurrent sessions of one API key's "
                       "principal (env AVATAR_GATEWAY_MAX_SESSIONS_PER_CALLER; default 0: no limit)")
    serve.add_argument("--starts-per-minute-per-caller", type=int, help="most StartSession calls a minute of one "
                       "principal (env AVATAR_GATEWAY_STARTS_PER_MINUTE_PER_CALLER; default 0: no limit)")
    serve.add_argument("--idle-timeout", type=float, dest="default_idle_timeout_s",
                       help="default idle timeout in seconds")
    serve.add_argument("--max-duration", type=float, dest="default_max_duration_s",
                       help="default max session duration in seconds")
    serve.add_argument("--shutdown-grace", type=float, dest="shutdown_grace_s",
                       help="seconds to let buffered speech play out on shutdown")
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--port-file", help="write the bound port to this file once serving")
    serve.add_argument("--tls-cert", dest="tls_cert_file", help="TLS certificate chain file, PEM (env "
                       "AVATAR_GATEWAY_TLS_CERT); with --tls-key the port serves TLS only")
    serve.add_argument("--tls-key", dest="tls_key_file", help="the certificate's private key file, PEM (env "
                       "AVATAR_GATEWAY_TLS_KEY)")
    serve.add_argument("--tls-client-ca", dest="tls_client_ca_file", help="CA file, PEM: callers must present a "
                       "certificate it signed (mutual TLS; env AVATAR_GATEWAY_TLS_CLIENT_CA)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the listen port (env "
                       "AVATAR_GATEWAY_WORKERS; default 1). A gateway process does its work on one core; more "
                       "workers use more cores")
    # set by the supervisor on the workers it starts
    serve.add_argument("--worker", help=argparse.SUPPRESS)
    serve.add_argument("--run-dir", help=argparse.SUPPRESS)
    return parser


class _EndOfInput(asyncio.Protocol):
    """A worker's stdin is its supervisor's pipe: when it closes, the supervisor is gone."""

    def __init__(self, gone: asyncio.Event) -> None:
        self._gone = gone

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone.set()


async def serve(config: GatewayConfig, port_file: str | None = None, cluster: ClusterSpec | None = None) -> None:
    """Serve until a termination signal (a worker: also until its supervisor is gone)."""
    server = GatewayServer(config, cluster=cluster)
    port = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _report_metrics, server)
    if cluster is not None:
        transport, _ = await loop.connect_read_pipe(lambda: _EndOfInput(stop), sys.stdin)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    elif port_file:
        await asyncio.to_thread(Path(port_file).write_text, f"{port}\n")
    await stop.wait()
    log.info("termination signal: shutting down")
    await server.stop()
    if cluster is not None:
        transport.close()


def _report_metrics(server: GatewayServer) -> None:
    """SIGUSR1: log what this process measured since the last report (one JSON object after `metrics `)."""
    figures = server.manager.metrics.report()
    figures.update(sessions=len(server.manager.active()), streams=server.service.open_streams)
    logging.getLogger("gateway.metrics").info("metrics %s", json.dumps(figures))


def _cluster(args: argparse.Namespace) -> ClusterSpec | None:
    if not args.worker:
        return None
    index, _, count = args.worker.partition("/")
    return ClusterSpec(int(index), int(count), Path(args.run_dir))


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    skip = ("command", "log_level", "port_file", "worker", "run_dir")
    overrides = {k: v for k, v in vars(args).items() if k not in skip}
    try:
        load_file_secrets(os.environ)
        config = from_env(**overrides)
    except ValueError as exc:
        print(f"avatar-gateway: {exc}", file=sys.stderr)
        return 2
    cluster = _cluster(args)
    logs.setup(json_lines=config.log_json, level=args.log_level,
               secrets=[config.livekit_api_secret, *config.api_keys],
               worker=None if cluster is None else cluster.index)
    try:
        if cluster is None and config.workers > 1:
            supervisor = Supervisor(argv[1:], config.workers, config.listen, config.shutdown_grace_s)
            return asyncio.run(supervisor.run(args.port_file))
        asyncio.run(serve(config, args.port_file, cluster))
    except ValueError as exc:  # a setting that only the providers can judge (gateway.config.check_api_keys)
        print(f"avatar-gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
