"""`./run bench` lists the benchmarks, refuses unknown names, and every listed one is a runnable module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def test_lists_every_benchmark_and_refuses_unknown_names() -> None:
    listing = _bench()
    assert listing.returncode == 0
    for name in BENCHMARKS:
        assert name in listing.stdout
    assert _bench("no_such_bench").returncode == 2


def test_every_listed_benchmark_is_a_module_with_a_main() -> None:
    for name in BENCHMARKS:
        source = (ROOT / "bench" / f"{name}.py").read_text()
        assert 'if __name__ == "__main__":' in source, name


def test_a_benchmark_runs_through_the_entry_point() -> None:
    run = _bench("render_mock", "--frames", "50", "--width", "64", "--height", "48")
    assert run.returncode == 0, run.stderr
    assert '"bench": "render_mock"' in run.stdout
