"""Run the fake Simli on its own, as the remote service it stands for:

    python -m fakes.simli --host 10.77.0.1 --port 0 --key KEY --face FACE [--width 512 --height 512]

Prints ``fake-simli listening on http://HOST:PORT`` once it serves; stops on SIGTERM or SIGINT. Its sessions can be
read (and waited for) at ``GET /_fake/state[?open=N&timeout=S]``. Development and tests only.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from fakes.simli.server import FakeSimli


async def _serve(args: argparse.Namespace) -> None:
    async with FakeSimli(args.host, args.port, api_keys=args.key, faces=args.face or None, width=args.width,
                         height=args.height, fps=args.fps) as fake:
        print(f"fake-simli listening on {fake.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fakes.simli", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", required=True, help="an API key it accepts (repeatable)")
    parser.add_argument("--face", action="append", default=[], help="a face id it knows (repeatable; none: any)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--fps", type=float, default=30.0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
