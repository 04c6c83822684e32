"""fiber_core.Pool (local backend) against multiprocessing's spawn Pool, side by side.

Run:  python benchmarks/bench_pool.py [--repeat N] [--quick]
(or ``tox -e bench``). Both libraries run in the same process, interleaved
(alternating which goes first), several repetitions; the medians and their
ratio (fiber_core / multiprocessing: below 1 is faster) go to
docs/performance.md and docs/performance.png.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import fiber_core

WORKERS = 5
SLEEP_CASES = [(1.0, 5), (0.1, 50), (0.01, 500), (0.001, 5000)]
IDENTITY_TASKS = 20_000
ARRAY_MB = 64
ROOT = Path(__file__).resolve().parent.parent


def identity(x: Any) -> Any:
    return x


def _mp_pool() -> Any:
    return multiprocessing.get_context("spawn").Pool(WORKERS)


def _fiber_pool() -> Any:
    return fiber_core.Pool(WORKERS)


MAKERS: Dict[str, Callable[[], Any]] = {"multiprocessing": _mp_pool, "fiber_core": _fiber_pool}


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _startup(make: Callable[[], Any]) -> float:
    start = time.perf_counter()
    pool = make()
    pool.apply(identity, (1,))
    seconds = time.perf_counter() - start
    pool.terminate()
    pool.join()
    return seconds


Case = Tuple[str, str, float, Callable[[Any, str], float]]
"""(name, what the target bounds, target ratio, run(pool, library) -> seconds)."""


def cases(array: np.ndarray) -> List[Case]:
    found: List[Case] = []
    for seconds, count in SLEEP_CASES:
        found.append((f"sleep {count} x {seconds * 1000:g} ms (ideal 1.0 s)", "at most", 1.0,
                      lambda pool, _, s=seconds, n=count: _timed(
                          lambda: pool.map(time.sleep, [s] * n, chunksize=1))))
    found += [
        (f"{IDENTITY_TASKS:,} identity tasks, chunksize=1", "at most", 1.0,
         lambda pool, _: _timed(lambda: pool.map(identity, range(IDENTITY_TASKS), 1))),
        (f"{IDENTITY_TASKS:,} identity tasks, default chunksize", "at most", 2.0,
         lambda pool, _: _timed(lambda: pool.map(identity, range(IDENTITY_TASKS)))),
        (f"5 round trips of a {ARRAY_MB} MB array", "at most", 0.5,
         lambda pool, _: _timed(lambda: pool.map(identity, [array] * 5, chunksize=1))),
        ("start a Pool of 5, first result", "at most", 1.5,
         lambda pool, library: _startup(MAKERS[library])),
    ]
    return found


def run(repeat: int, quick: bool) -> Dict[str, Dict[str, List[float]]]:
    array = np.random.default_rng(0).random(ARRAY_MB * 1024 * 1024 // 8)
    selected = cases(array)
    if quick:
        selected = [case for case in selected if not case[0].startswith("sleep 5 x")]
    times: Dict[str, Dict[str, List[float]]] = {
        name: {library: [] for library in MAKERS} for name, *_ in selected}
    pools = {library: make() for library, make in MAKERS.items()}
    try:
        for pool in pools.values():  # every worker up before anything is timed
            pool.map(time.sleep, [0.05] * (2 * WORKERS), chunksize=1)
        for rep in range(repeat):
            order = list(MAKERS) if rep % 2 == 0 else list(reversed(MAKERS))
            for name, _, _, measure in selected:
                for library in order:
                    seconds = measure(pools[library], library)
                    times[name][library].append(seconds)
                    print(f"rep {rep + 1}/{repeat}  {library:15s} {name:45s} {seconds:8.4f} s",
                          flush=True)
    finally:
        for pool in pools.values():
            pool.terminate()
            pool.join()
    return times


def machine() -> List[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import zmq

    return [f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}",
            f"Python {platform.python_version()}, pyzmq {zmq.__version__}, "
            f"numpy {np.__version__}, fiber_core {fiber_core.__version__}"]


def report(times: Dict[str, Dict[str, List[float]]], repeat: int) -> None:
    selected = {name: (bound, target) for name, bound, target, _ in cases(np.zeros(1))}
    lines = [
        "# Pool performance: fiber_core against multiprocessing",
        "",
        "Written by `python benchmarks/bench_pool.py` (or `tox -e bench`): both "
        "libraries run in the same process, interleaved, "
        f"{repeat} repetitions; medians in seconds. Ratio = fiber_core / multiprocessing "
        "(below 1: fiber_core is faster). multiprocessing uses the spawn start method "
        "(both start fresh interpreters); fiber_core uses the local backend. "
        f"Pools of {WORKERS} workers, started and warmed up before timing "
        "(except the start-up case).",
        "",
        "| case | multiprocessing (s) | fiber_core (s) | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    ratios = {}
    for name, by_library in times.items():
        mp_median = statistics.median(by_library["multiprocessing"])
        fiber_median = statistics.median(by_library["fiber_core"])
        ratio = ratios[name] = fiber_median / mp_median
        bound, target = selected[name]
        met = "yes" if ratio <= target else "**no**"
        lines.append(f"| {name} | {mp_median:.4f} | {fiber_median:.4f} | {ratio:.2f} | "
                     f"{bound} {target:g}x | {met} |")
    lines += ["", "Machine: " + "; ".join(machine()), ""]
    notes = ROOT / "docs" / "performance-notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    (ROOT / "docs" / "performance.md").write_text("\n".join(lines))
    plot(ratios, selected)


def plot(ratios: Dict[str, float], selected: Dict[str, Tuple[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ratios)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    positions = range(len(names))
    colors = ["tab:green" if ratios[n] <= selected[n][1] else "tab:red" for n in names]
    ax.barh(positions, [ratios[n] for n in names], color=colors, label="fiber_core / mp")
    ax.scatter([selected[n][1] for n in names], positions, marker="|", s=400, color="black",
               label="target (at most)", zorder=3)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(list(positions))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("time ratio fiber_core / multiprocessing (lower is better)")
    ax.set_title("fiber_core.Pool vs multiprocessing spawn Pool (medians)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "performance.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the 5 x 1 s sleep case")
    args = parser.parse_args()
    times = run(args.repeat, args.quick)
    report(times, args.repeat)
    print(f"wrote {ROOT / 'docs' / 'performance.md'} and performance.png", file=sys.stderr)


if __name__ == "__main__":
    main()
