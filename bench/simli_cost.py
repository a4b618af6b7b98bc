"""What a Simli session costs the gateway, against the fake Simli, side by side with the mock in the same run.

One command runs these phases one after the other, each with a gateway of its own (`avatar-gateway serve`, one
process, publishing into the loopback LiveKit development server; CPU, RSS and threads read from /proc; latencies
from the `metrics` line it logs on SIGUSR1):

- idle: the gateway with no session;
- mock xN: N mock sessions (`sample_rate=16000`, standing in for a 16 kHz provider), 512x512@30;
- simli xN: N Simli sessions against the fake Simli (`python -m fakes.simli`, its own process, as the real Simli is
  remote: its encoding is not the gateway's), 512x512@30 from the fake and from the gateway.

Every session speaks the example clip (16 kHz, 20 ms chunks on a real-time schedule, a 0.5 s pause between
repetitions) and is published into a room of its own. A viewer (bench/simli_viewer.py, its own process: real
livekit SDK, mouth opening read from the pixels) watches the first `--viewers` sessions; the first one's A/V offset
is reported. Per phase, over `--window` s after `--warmup` s: gateway CPU (share of one core) and per session
(minus the idle phase's), RSS and per session (over the same process before its first session), hop p50/p99 (agent
chunk received -> handed to the provider; for Simli that includes the WebSocket send), republish_audio/video p50/p99
(Simli's media arrived -> its audio to the audio source / its frame to the video source), the viewer's A/V offset
and correlation, fps and dropped frames, the agents' underrun warnings, the gateway's CPU by thread, the CPU of the
processes around it, and for Simli the fake's open sessions once the phase's sessions are ended (must be 0).
`--barge-in`: every agent sends one clear_buffer after the warm-up (an interrupt empties every queue), and the window
starts 3 s later.

`--soak-minutes M`: one Simli session speaking in a loop (1 s pauses) for M minutes with one viewer that stalls for
`--stall-s` s in the middle: its process is stopped (SIGSTOP, then SIGCONT; `--stall-target server` stops the
loopback server instead). The gateway's RSS is sampled every 10 s and reported with its least-squares slope
(MB/min, over the whole run and after the first minute) and min/max; per minute the gateway's latencies and CPU and
the viewer's A/V offset.

Run inside the network namespace (every address is the namespace's own; the run is bounded and stops by itself):
    scripts/netns-run .venv/bin/python -m bench.simli_cost --sessions 1 4 --window 45
    scripts/netns-run .venv/bin/python -m bench.simli_cost --sessions --soak-minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api

from agent_client import AudioStream, AvatarGatewayClient, PlaybackFinished, Session, StreamWarning
from bench.gateway_cli import START_TIMEOUT_S, GatewayUnderTest
from bench.processes import free_port
from bench.procstat import cpu_seconds, rss_mb
from examples.agent import load_clip
from fakes.simli.process import FakeSimliProcess
from loopback import loopback_host, not_in_namespace_reason
from loopback.process import stop_process

ROOT = Path(__file__).resolve().parents[1]
LK_KEY = "simlicost"
SIMLI_KEY = "simli-cost-key"
FACE = "simli-cost-face"
WIDTH, HEIGHT, FPS = 512, 512, 30
CHUNK_S = 0.02
PHASE_SLACK_S = 240.0  # a phase's start and teardown, beyond its warm-up and window
BARGE_IN_SETTLE_S = 3.0
SOAK_RSS_EVERY_S = 10.0
SOAK_REPORT_EVERY_S = 60.0


# -- processes ---------------------------------------------------------------------------------------------------------
def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _machine_jiffies() -> tuple[int, int, int]:
    """(busy, stolen, total) jiffies of every core, from /proc/stat (stolen: this VM's cores ran something else)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle, steal = fields[3] + fields[4], fields[7]
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def _schedstat(pid: int, tid: int) -> tuple[float, float]:
    """(seconds on a core, seconds runnable but waiting for one) of a thread so far."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    return int(run) / 1e9, int(wait) / 1e9


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Every thread of the process: tid -> (name, CPU seconds)."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _thread_groups(pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                   wall: float) -> dict[str, float]:
    """CPU (cores) by kind of thread: the main thread (the event loop), the other threads Python started (they keep
    the process's name: aiortc's decoders, to_thread workers), and the native threads by name, digits removed."""
    main_name = after.get(pid, ("", 0.0))[0]
    groups: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        used = cpu - before.get(tid, (name, 0.0))[1]
        if tid == pid:
            key = "main thread (event loop)"
        elif name == main_name:
            key = "other Python threads"
        else:
            key = re.sub(r"[-_ #.]*\d+$", "", name) or name
        groups[key] = groups.get(key, 0.0) + used / wall
    return {k: round(v, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v >= 0.0005}


def _pin(cpus: set[int]) -> Any:
    """A preexec_fn that puts the child on `cpus` (every thread it starts inherits them)."""
    def pin() -> None:
        os.sched_setaffinity(0, cpus)
    return pin


class RoomGateway(GatewayUnderTest):
    """`avatar-gateway serve` (one process) publishing into a LiveKit server, with Simli enabled; keeps its
    warnings."""

    def __init__(self, proc: asyncio.subprocess.Process, workers: int) -> None:
        self.warnings: list[str] = []
        self.renewals: list[str] = []
        super().__init__(proc, workers)

    @classmethod
    async def launch(cls, env: dict[str, str], cpus: set[int] | None = None) -> RoomGateway:
        exe = Path(sys.executable).with_name("avatar-gateway")
        proc = await asyncio.create_subprocess_exec(
            str(exe), "serve", "--listen", "127.0.0.1:0", "--log-json", "--max-sessions", "100",
            "--idle-timeout", "3600", "--shutdown-grace", "0", env=env, cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=None if cpus is None else _pin(cpus))
        gateway = cls(proc, 1)
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                record = await gateway._record()
                msg = str(record.get("msg", ""))
                if msg.startswith("gateway listening on port"):
                    gateway.port = int(msg.split()[4])
                    return gateway

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            msg = str(record.get("msg", ""))
            if record.get("level") in ("warning", "error", "critical"):
                self.warnings.append(msg[:300])
            if "renew" in msg:
                self.renewals.append(msg[:300])
            self._records.put_nowait(record)
        self._records.put_nowait({"msg": "exited"})

    @property
    def pid(self) -> int:
        return self.proc.pid


class ViewerProcess:
    """bench/simli_viewer.py watching one avatar."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, token: str, identity: str) -> ViewerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.simli_viewer", "--url", url, "--identity", identity, "--fps", str(FPS),
            cwd=ROOT, env=dict(os.environ, VIEWER_TOKEN=token), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        viewer = cls(proc)
        try:
            async with asyncio.timeout(45):
                while (await viewer._line()).get("event") != "first_frame":
                    pass
        except BaseException:
            await viewer.close()
            raise
        return viewer

    async def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"the viewer exited ({await self.proc.wait()})")
        record: dict[str, Any] = json.loads(raw)
        return record

    async def ask(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:  # noqa: ASYNC109
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            return await self._line()

    async def window(self, t0: float, t1: float) -> dict[str, Any]:
        return await self.ask({"cmd": "window", "t0": t0, "t1": t1})

    async def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            await stop_process(self.proc)


# -- the rig: the loopback server and the fake Simli, for the whole run ----------------------------------------------
@dataclass
class Rig:
    host: str
    url: str
    secret: str
    server: asyncio.subprocess.Process
    fake: FakeSimliProcess

    def gateway_env(self) -> dict[str, str]:
        return dict(os.environ, LIVEKIT_URL=self.url, LIVEKIT_API_KEY=LK_KEY, LIVEKIT_API_SECRET=self.secret,
                    SIMLI_API_KEY=SIMLI_KEY, SIMLI_FACE_ID=FACE, SIMLI_URL=self.fake.url)

    def viewer_token(self, room: str, identity: str) -> str:
        return (api.AccessToken(LK_KEY, self.secret).with_identity(identity)
                .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


@contextlib.asynccontextmanager
async def rig() -> Any:
    host, secret = loopback_host(), secrets.token_urlsafe(32)
    port = free_port(host)
    url = f"ws://{host}:{port}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loopback", "--host", host, "--port", str(port), "--api-key", LK_KEY,
        "--log-level", "WARNING", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, LIVEKIT_API_SECRET=secret))
    try:
        assert server.stdout is not None
        async with asyncio.timeout(30):
            banner = (await server.stdout.readline()).decode()
        if url not in banner:
            raise RuntimeError(f"the loopback server did not start: {banner!r}")
        async with FakeSimliProcess.start(host, keys=(SIMLI_KEY,), faces=(FACE,), width=WIDTH, height=HEIGHT,
                                          fps=FPS) as fake:
            yield Rig(host, url, secret, server, fake)
    finally:
        await stop_process(server)


# -- the agents -----------------------------------------------------------------------------------------------------
@dataclass
class Agent:
    """One session's agent: speaks the clip on a real-time schedule, reads every event."""

    stream: AudioStream
    pause_s: float
    events: list[tuple[float, object]] = field(default_factory=list)
    chunks: int = 0
    late_max_s: float = 0.0

    async def talk(self, stop: asyncio.Event) -> None:
        pcm, rate = load_clip()
        step = int(rate * CHUNK_S)
        start, k = time.monotonic(), 0
        while not stop.is_set():
            for i in range(0, pcm.size, step):
                if stop.is_set():
                    return
                due = start + k * CHUNK_S
                self.late_max_s = max(self.late_max_s, time.monotonic() - due)
                await self.stream.send(pcm[i : i + step])
                self.chunks += 1
                k += 1
                delay = start + k * CHUNK_S - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.stream.end_segment()
            k += round(self.pause_s / CHUNK_S)
            delay = start + k * CHUNK_S - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()

    async def read(self) -> None:
        async for event in self.stream:
            self.events.append((time.monotonic(), event))

    def count(self, kind: type, t0: float, t1: float) -> int:
        return sum(1 for t, e in self.events if isinstance(e, kind) and t0 <= t < t1)

    def warnings(self, t0: float, t1: float) -> dict[str, int]:
        return dict(Counter(e.reason for t, e in self.events if isinstance(e, StreamWarning) and t0 <= t < t1))


# -- figures ---------------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    t: float
    cpu: dict[str, float]
    threads: dict[int, tuple[str, float]]
    machine: tuple[int, int, int]
    main_threads: dict[str, tuple[float, float]]  # the event loops: gateway's, fake Simli's


def _snapshot(pids: dict[str, list[int]], gateway_pid: int) -> Snapshot:
    cpu = {name: sum(_cpu(p) for p in ps) for name, ps in pids.items()}
    loops = {name: _schedstat(ps[0], ps[0]) for name, ps in pids.items() if name in ("gateway", "fake_simli")}
    return Snapshot(time.monotonic(), cpu, _threads(gateway_pid), _machine_jiffies(), loops)


def _usage(a: Snapshot, b: Snapshot, gateway_pid: int) -> dict[str, Any]:
    wall = b.t - a.t
    busy, steal, total = (y - x for x, y in zip(a.machine, b.machine, strict=True))
    ncpu = os.cpu_count() or 1
    cores = {k: round((b.cpu[k] - a.cpu[k]) / wall, 4) for k in b.cpu}
    machine = busy / total * ncpu if total else 0.0
    threads = _thread_groups(gateway_pid, a.threads, b.threads, wall)
    ended = cores["gateway"] - sum(threads.values())
    if ended >= 0.005:
        threads["threads that ended in the window"] = round(ended, 4)
    return {
        "cpu_cores": cores,
        "gateway_threads_cores": threads,
        # each event loop's thread: the share of the window it ran on a core, and the share it was ready to run
        # but waited for one (the machine's cores were taken)
        "main_thread_on_core": {k: round((b.main_threads[k][0] - v[0]) / wall, 3) for k, v in a.main_threads.items()},
        "main_thread_waiting_for_core": {k: round((b.main_threads[k][1] - v[1]) / wall, 3)
                                         for k, v in a.main_threads.items()},
        "machine_busy_cores": round(machine, 3),
        "machine_stolen_cores": round(steal / total * ncpu, 3) if total else 0.0,
        # whatever else ran on the machine meanwhile (the kernel's own work for these processes counts in theirs)
        "other_processes_cores": round(max(0.0, machine - sum(cores.values())), 3),
    }


def _latency(metrics: dict[str, Any], name: str) -> dict[str, float] | None:
    summary = metrics.get(name) or {}
    if not summary.get("count"):
        return None
    return {"count": summary["count"], "p50_ms": round(summary["p50_us"] / 1000, 3),
            "p99_ms": round(summary["p99_us"] / 1000, 3), "max_ms": round(summary["max_us"] / 1000, 3)}


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    t = np.array([s[0] for s in samples]) / 60
    y = np.array([s[1] for s in samples])
    return round(float(np.polyfit(t, y, 1)[0]), 3)


async def _fake_sessions(rig: Rig) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = (await rig.fake.state())["sessions"]
    return sessions


def _session_options(provider: str) -> dict[str, str]:
    return {"sample_rate": "16000"} if provider == "mock" else {}


async def _start_sessions(client: AvatarGatewayClient, provider: str, label: str, n: int) -> list[Session]:
    return [await client.start_session(provider, room_name=f"{label}-{i}", agent_identity=f"agent-{i}",
                                       width=WIDTH, height=HEIGHT, fps=FPS, provider_options=_session_options(provider),
                                       idle_timeout=900, max_duration=3600)
            for i in range(n)]


async def _stop_agents(agents: list[Agent], tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stop.set()
    for agent in agents:
        agent.stream.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _profile(pid: int, args: argparse.Namespace, phase_name: str) -> asyncio.subprocess.Process:
    """py-spy recording the gateway's Python threads over the window (raw collapsed stacks, one file per phase;
    without pausing the process, so a native call shows as the Python line that made it)."""
    out = Path(args.profile) / f"{phase_name.replace(' ', '')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "-d", str(int(args.window)),
        "-r", "100", "--nonblocking", "--threads", "-f", "raw", "-o", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)


# -- a phase ---------------------------------------------------------------------------------------------------------
async def phase(rig: Rig, provider: str, n: int, args: argparse.Namespace, idle_cpu: float | None
                ) -> dict[str, Any]:
    label = f"{provider}{n}-{secrets.token_hex(2)}"
    gateway = await RoomGateway.launch(rig.gateway_env(), args.gateway_cpus)
    viewers: list[ViewerProcess] = []
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    result: dict[str, Any] = {"phase": "idle" if n == 0 else f"{provider} x{n}", "provider": provider if n else None,
                              "sessions": n}
    try:
        await asyncio.sleep(2.0)  # start-up settles (precomputes, imports)
        result["gateway_rss_before_sessions_mb"] = rss_before = round(rss_mb(gateway.pid), 1)
        fake_before = len(await _fake_sessions(rig))
        async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=60) as client:
            t_start = time.monotonic()
            sessions = await _start_sessions(client, provider, label, n)
            result["start_sessions_s"] = round(time.monotonic() - t_start, 2)
            for i, session in enumerate(sessions[: args.viewers]):
                room = f"{label}-{i}"
                viewers.append(await ViewerProcess.start(rig.url, rig.viewer_token(room, f"viewer-{i}"),
                                                         session.avatar_identity))
            for session in sessions:
                stream = await client.stream_audio(session.name, sample_rate=16000).open()
                agents.append(Agent(stream, pause_s=0.5))
            for agent in agents:
                tasks += [asyncio.create_task(agent.talk(stop)), asyncio.create_task(agent.read())]
            await asyncio.sleep(args.warmup)
            if args.barge_in:
                # an interrupt empties every queue (the provider's, the framer's, the publisher's): the window then
                # measures the queues as they settle after it rather than as they were at the start
                for agent in agents:
                    await agent.stream.clear()
                await asyncio.sleep(BARGE_IN_SETTLE_S)

            pids = {"gateway": [gateway.pid], "loopback_server": [rig.server.pid], "fake_simli": [rig.fake.proc.pid],
                    "viewers": [v.proc.pid for v in viewers], "bench_agents": [os.getpid()]}
            await gateway.metrics()  # a new metrics window starts now
            stats0 = [(await client.get_session(s.name)).stats for s in sessions]
            profiler = await _profile(gateway.pid, args, result["phase"]) if args.profile and n else None
            s0 = _snapshot(pids, gateway.pid)
            rss: list[float] = []
            while time.monotonic() < s0.t + args.window:
                rss.append(rss_mb(gateway.pid))
                await asyncio.sleep(min(1.0, max(0.0, s0.t + args.window - time.monotonic())))
            s1 = _snapshot(pids, gateway.pid)
            rss.append(rss_mb(gateway.pid))
            if profiler is not None:
                await profiler.wait()
            metrics = (await gateway.metrics())[0]
            stats1 = [(await client.get_session(s.name)).stats for s in sessions]
            wall = s1.t - s0.t
            usage = _usage(s0, s1, gateway.pid)
            gw_cpu = usage["cpu_cores"]["gateway"]
            result.update({
                "window_s": round(wall, 2),
                "gateway_cpu_cores": gw_cpu,
                "gateway_cpu_per_session": (round((gw_cpu - (idle_cpu or 0.0)) / n, 4) if n else None),
                "gateway_rss_mb": round(rss[-1], 1), "gateway_rss_max_mb": round(max(rss), 1),
                "gateway_rss_per_session_mb": round((rss[-1] - rss_before) / n, 1) if n else None,
                "hop": _latency(metrics, "hop"), "republish_audio": _latency(metrics, "republish_audio"),
                "republish_video": _latency(metrics, "republish_video"), "loop_lag": _latency(metrics, "loop_lag"),
                "arrival_lag": _latency(metrics, "arrival_lag"), "chunks": metrics.get("chunks"),
                "gateway_fps": [round((b.video_frames - a.video_frames) / wall, 2)
                                for a, b in zip(stats0, stats1, strict=True)],
                "gateway_underruns": sum(b.underruns - a.underruns for a, b in zip(stats0, stats1, strict=True)),
                "agent_warnings": dict(sum((Counter(a.warnings(s0.t, s1.t)) for a in agents), Counter())),
                "segments_finished": sum(a.count(PlaybackFinished, s0.t, s1.t) for a in agents),
                "agent_late_max_ms": round(max((a.late_max_s for a in agents), default=0.0) * 1000, 1),
                **usage,
            })
            result["viewers"] = [await v.window(s0.t, s1.t) for v in viewers]

            await _stop_agents(agents, tasks, stop)
            for session in sessions:
                await client.end_session(session.name)
        if provider == "simli" and n:
            state = await rig.fake.state(open_sessions=0, timeout=30)
            new = state["sessions"][fake_before:]
            result["fake_open_sessions_after"] = state["open_sessions"]
            result["fake_sessions_started"] = len(new)
            result["fake_stop_causes"] = dict(Counter(str(s["stop_cause"]) for s in new))
        result["gateway_warnings"] = gateway.warnings[:10]
        result["gateway_warning_count"] = len(gateway.warnings)
        return result
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for viewer in viewers:
            await viewer.close()
        await gateway.stop()


# -- the soak --------------------------------------------------------------------------------------------------------
async def _stall(target: asyncio.subprocess.Process, at: float, seconds: float, log: list[dict[str, Any]]) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    target.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        await asyncio.sleep(seconds)
    finally:
        target.send_signal(signal.SIGCONT)
        log.append({"stopped_at": stopped, "resumed_at": time.monotonic()})


async def soak(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    label = f"soak-{secrets.token_hex(2)}"
    gateway = await RoomGateway.launch(rig.gateway_env(), args.gateway_cpus)
    viewer: ViewerProcess | None = None
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    stalls: list[dict[str, Any]] = []
    staller: asyncio.Task[None] | None = None
    total = args.soak_minutes * 60
    out: dict[str, Any] = {"phase": "soak", "minutes": args.soak_minutes, "stall_s": args.stall_s,
                           "stall_target": args.stall_target}
    try:
        await asyncio.sleep(2.0)
        fake_before = len(await _fake_sessions(rig))
        async with AvatarGatewayClient(f"127.0.0.1:{gateway.port}", timeout=60) as client:
            (session,) = await _start_sessions(client, "simli", label, 1)
            viewer = await ViewerProcess.start(rig.url, rig.viewer_token(f"{label}-0", "viewer-soak"),
                                               session.avatar_identity)
            agent = Agent(await client.stream_audio(session.name, sample_rate=16000).open(), pause_s=1.0)
            tasks = [asyncio.create_task(agent.talk(stop)), asyncio.create_task(agent.read())]
            t_start = time.monotonic()
            # in the middle, clear of the per-minute reports
            stall_at = t_start + (total // 2 // SOAK_REPORT_EVERY_S) * SOAK_REPORT_EVERY_S + 25
            out["stall_planned_at_s"] = round(stall_at - t_start, 1)
            target = viewer.proc if args.stall_target == "viewer" else rig.server
            staller = asyncio.create_task(_stall(target, stall_at, args.stall_s, stalls))
            await gateway.metrics()
            pids = {"gateway": [gateway.pid], "loopback_server": [rig.server.pid], "fake_simli": [rig.fake.proc.pid],
                    "viewers": [viewer.proc.pid], "bench_agents": [os.getpid()]}
            rss: list[tuple[float, float]] = []
            minutes: list[dict[str, Any]] = []
            last = _snapshot(pids, gateway.pid)
            tick = 0
            while True:
                due = t_start + tick * SOAK_RSS_EVERY_S
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                now = time.monotonic()
                rss.append((round(now - t_start, 1), round(rss_mb(gateway.pid), 1)))
                if tick and (tick * SOAK_RSS_EVERY_S) % SOAK_REPORT_EVERY_S == 0:
                    snap = _snapshot(pids, gateway.pid)
                    metrics = (await gateway.metrics())[0]
                    seen = await viewer.window(last.t, snap.t)
                    await viewer.ask({"cmd": "trim", "before": snap.t - 1})
                    usage = _usage(last, snap, gateway.pid)
                    minutes.append({
                        "t_s": round(now - t_start), "gateway_cpu_cores": usage["cpu_cores"]["gateway"],
                        "rss_mb": rss[-1][1], "hop": _latency(metrics, "hop"),
                        "republish_audio": _latency(metrics, "republish_audio"),
                        "republish_video": _latency(metrics, "republish_video"),
                        "loop_lag": _latency(metrics, "loop_lag"),
                        "viewer": {k: seen.get(k) for k in ("offset_ms", "correlation", "fps", "dropped_frames",
                                                           "largest_video_gap_ms", "largest_audio_gap_ms")},
                        "agent_warnings": agent.warnings(last.t, snap.t),
                        "cpu_cores": usage["cpu_cores"], "machine_busy_cores": usage["machine_busy_cores"],
                        "other_processes_cores": usage["other_processes_cores"],
                        "main_thread_waiting_for_core": usage["main_thread_waiting_for_core"],
                    })
                    audio = minutes[-1]["republish_audio"] or {}
                    print(f"  soak {minutes[-1]['t_s']:>4} s: RSS {rss[-1][1]:.1f} MB, gateway CPU "
                          f"{minutes[-1]['gateway_cpu_cores']:.0%}, republish audio p50 {audio.get('p50_ms')} ms, "
                          f"viewer A/V {seen.get('offset_ms')} ms (corr {seen.get('correlation')}), fps "
                          f"{seen.get('fps', 0):.1f}, dropped {seen.get('dropped_frames')}, other processes "
                          f"{usage['other_processes_cores']:.2f} cores", flush=True)
                    last = snap
                if now - t_start >= total:
                    break
                tick += 1
            stats = (await client.get_session(session.name)).stats
            await _stop_agents([agent], tasks, stop)
            await client.end_session(session.name)
        state = await rig.fake.state(open_sessions=0, timeout=30)
        new = state["sessions"][fake_before:]
        after_first = [s for s in rss if s[0] >= 60]
        values = [v for _, v in rss]
        out.update({
            "rss_samples": rss, "rss_min_mb": min(values), "rss_max_mb": max(values), "rss_first_mb": values[0],
            "rss_last_mb": values[-1], "rss_slope_mb_per_min": _slope_mb_per_min(rss),
            "rss_slope_after_first_minute_mb_per_min": _slope_mb_per_min(after_first),
            "stalls": [{"at_s": round(s["stopped_at"] - t_start, 1),
                        "for_s": round(s["resumed_at"] - s["stopped_at"], 2)} for s in stalls],
            "minutes_report": minutes, "gateway_video_frames": stats.video_frames,
            "gateway_underruns": stats.underruns, "segments_finished": stats.segments_finished,
            "segments_interrupted": stats.segments_interrupted,
            "agent_warnings": agent.warnings(0, float("inf")), "agent_late_max_ms": round(agent.late_max_s * 1000, 1),
            "fake_open_sessions_after": state["open_sessions"], "fake_sessions_started": len(new),
            "fake_stop_causes": dict(Counter(str(s["stop_cause"]) for s in new)),
            "gateway_renewals": gateway.renewals, "gateway_warnings": gateway.warnings[:10],
            "gateway_warning_count": len(gateway.warnings),
        })
        return out
    finally:
        stop.set()
        if staller is not None:
            staller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await staller
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if viewer is not None:
            await viewer.close()
        await gateway.stop()


# -- the report ------------------------------------------------------------------------------------------------------
def _p(lat: dict[str, float] | None) -> str:
    return "-" if lat is None else f"{lat['p50_ms']:.2f}/{lat['p99_ms']:.2f}"


def _row(r: dict[str, Any]) -> str:
    per = r.get("gateway_cpu_per_session")
    rss_per = r.get("gateway_rss_per_session_mb")
    v = r["viewers"][0] if r.get("viewers") else {}
    av = "-" if v.get("offset_ms") is None else f"{v['offset_ms']:+.0f} ({v['correlation']:.2f})"
    seen = "-" if not v else f"{v['fps']:.1f}/{v['dropped_frames']}"
    fake_open = r.get("fake_open_sessions_after", "-")
    return (f"{r['phase']:<9} {r['gateway_cpu_cores']:>6.1%} {'-' if per is None else f'{per:.1%}':>7} "
            f"{r['gateway_rss_mb']:>6.0f} {'-' if rss_per is None else f'{rss_per:+.1f}':>7} "
            f"{_p(r.get('hop')):>11} {_p(r.get('republish_audio')):>11} {_p(r.get('republish_video')):>11} "
            f"{av:>12} {seen:>9} {min(r.get('gateway_fps') or [0]):>6.1f} {fake_open!s:>4} "
            f"{r.get('machine_busy_cores') or 0:>5.2f} {r.get('other_processes_cores') or 0:>5.2f} "
            f"{r['main_thread_waiting_for_core'].get('gateway', 0):>5.0%}")


HEADER = (f"{'phase':<9} {'gw CPU':>6} {'/sess':>7} {'RSS MB':>6} {'Δ/sess':>7} {'hop ms':>11} "
          f"{'rep. audio':>11} {'rep. video':>11} {'A/V ms (r)':>12} {'fps/drop':>9} {'gw fps':>6} {'open':>4} "
          f"{'busy':>5} {'other':>5} {'wait':>5}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"bench": "simli_cost", "window_s": args.window, "warmup_s": args.warmup,
                              "barge_in": args.barge_in, "pin_gateway": args.pin_gateway,
                              "video": f"{WIDTH}x{HEIGHT}@{FPS}", "viewers_per_phase": args.viewers, "phases": []}
    async with rig() as r:
        if args.sessions:
            print(HEADER, flush=True)
            plan = [("mock", 0)] + [(p, n) for n in args.sessions for p in args.providers]
            idle_cpu: float | None = None
            for provider, n in plan:
                async with asyncio.timeout(args.warmup + args.window + PHASE_SLACK_S + 10 * n):
                    result = await phase(r, provider, n, args, idle_cpu)
                if n == 0:
                    idle_cpu = result["gateway_cpu_cores"]
                report["phases"].append(result)
                print(_row(result), flush=True)
                print(json.dumps(result), flush=True)
        if args.soak_minutes > 0:
            async with asyncio.timeout(args.soak_minutes * 60 + PHASE_SLACK_S):
                s = await soak(r, args)
            report["soak"] = s
            print(json.dumps(s), flush=True)
            print(f"soak: RSS {s['rss_min_mb']:.1f}-{s['rss_max_mb']:.1f} MB, slope {s['rss_slope_mb_per_min']} "
                  f"MB/min ({s['rss_slope_after_first_minute_mb_per_min']} after the first minute), stalls "
                  f"{s['stalls']}, fake sessions started {s['fake_sessions_started']}, open after "
                  f"{s['fake_open_sessions_after']}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="*", default=[1, 4],
                        help="N for the mock xN and simli xN phases (none: no phase, e.g. only the soak)")
    parser.add_argument("--providers", nargs="+", choices=("mock", "simli"), default=["mock", "simli"],
                        help="the providers of the phases, in this order for each N")
    parser.add_argument("--window", type=float, default=45.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of speech before a phase's window")
    parser.add_argument("--barge-in", action="store_true",
                        help="every agent sends one clear_buffer after the warm-up, 3 s before the window")
    parser.add_argument("--viewers", type=int, default=1, help="sessions watched by a viewer (the first ones)")
    parser.add_argument("--pin-gateway", action="store_true",
                        help="the gateway on the first CPU, everything else (the fake Simli, the loopback server, "
                             "the viewers, the agents) on the others")
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--profile", metavar="DIR",
                        help="record the gateway with py-spy over each phase's window (it costs CPU: not for the "
                             "figures)")
    parser.add_argument("--stall-s", type=float, default=5.0, help="how long the soak's viewer stalls")
    parser.add_argument("--stall-target", choices=("viewer", "server"), default="viewer",
                        help="what is stopped for the stall: the viewer's process, or the loopback server's")
    args = parser.parse_args()
    if (reason := not_in_namespace_reason()) is not None:
        sys.exit(f"simli_cost: {reason}")
    args.gateway_cpus = None
    if args.pin_gateway:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("simli_cost: --pin-gateway needs at least 2 CPUs")
        args.gateway_cpus = {cpus[0]}
        os.sched_setaffinity(0, set(cpus[1:]))  # this process and every other process it starts
    if args.viewers < 1:
        sys.exit("simli_cost: --viewers must be at least 1 (the A/V offset is measured at a viewer)")
    report = asyncio.run(run(args))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
