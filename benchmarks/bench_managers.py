"""N AsyncManagers stepping simulators in parallel against N SyncManagers.

Run:  python benchmarks/bench_managers.py [--environments N] [--steps S]
Each manager hosts one CartSimulator (examples/async_managers.py) in a process
of its own. Sync: ``env.step()`` on each environment in turn. Async: every
``env.step()`` is sent at once and the replies collected. Prints a markdown
table (copied into docs/managers.md) with the ratio sync / async.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from async_managers import CartSimulator, SimulatorManager

from fiber_core.managers import SyncManager


class SyncSimulatorManager(SyncManager):
    """The same simulator behind a SyncManager."""


SyncSimulatorManager.register("CartSimulator", CartSimulator)


def _run(managers: List[Any], steps: int, wait: Callable[[Any], Any]) -> float:
    envs = [manager.CartSimulator(seed) for seed, manager in enumerate(managers)]
    for env in envs:
        wait(env.reset())
    start = time.perf_counter()
    for _ in range(steps):
        for result in [env.step(0.5) for env in envs]:
            wait(result)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--environments", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    kinds = {"sync": (SyncSimulatorManager, lambda r: r),
             "async": (SimulatorManager, lambda r: r.get())}
    times: dict = {kind: [] for kind in kinds}
    for kind, (cls, wait) in kinds.items():
        managers = [cls() for _ in range(options.environments)]
        for manager in managers:
            manager.start()
        try:
            for _ in range(options.repeat):
                times[kind].append(_run(managers, options.steps, wait))
        finally:
            for manager in managers:
                manager.shutdown()
    sync, asynchronous = (statistics.median(times[k]) for k in ("sync", "async"))
    print(f"| environments | steps | SyncManager (s) | AsyncManager (s) | ratio |\n"
          f"| ---: | ---: | ---: | ---: | ---: |\n"
          f"| {options.environments} | {options.steps} | {sync:.3f} | {asynchronous:.3f} "
          f"| {sync / asynchronous:.2f}x |\n\n"
          f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"local backend; medians of {options.repeat} runs.")


if __name__ == "__main__":
    main()
