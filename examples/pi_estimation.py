"""Estimate pi by Monte Carlo with Fiber processes.

    python examples/pi_estimation.py [WORKERS] [SAMPLES_PER_WORKER]

Runs on whichever backend is configured (local by default); set
FIBER_BACKEND=docker FIBER_IMAGE=... to run the same code in containers.
"""

import random
import sys

import fiber_core as multiprocessing


def count_inside(samples: int, seed: int, results: multiprocessing.Queue) -> None:
    """Throw ``samples`` darts at the unit square; report how many hit the quarter disc."""
    rng = random.Random(seed)
    inside = sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    results.put(inside)


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    results = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=count_inside, args=(samples, seed, results))
                 for seed in range(workers)]
    for process in processes:
        process.start()
    inside = sum(results.get() for _ in processes)
    for process in processes:
        process.join()
    estimate = 4.0 * inside / (workers * samples)
    print(f"pi is about {estimate:.4f} ({workers} processes x {samples} samples)")


if __name__ == "__main__":
    main()
