"""Estimate pi by Monte Carlo with a Fiber Pool.

    python examples/pi_estimation.py [TASKS] [SAMPLES_PER_TASK]

Runs on whichever backend is configured (local by default); set
FIBER_BACKEND=docker FIBER_IMAGE=... to run the same code in containers.
"""

import random
import sys

import fiber_core as multiprocessing


def count_inside(seed: int, samples: int) -> int:
    """Throw ``samples`` darts at the unit square; count the hits in the quarter disc."""
    rng = random.Random(seed)
    return sum(1 for _ in range(samples) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    with multiprocessing.Pool(processes=4) as pool:
        inside = sum(pool.starmap(count_inside, [(seed, samples) for seed in range(tasks)]))
    estimate = 4.0 * inside / (tasks * samples)
    print(f"pi is about {estimate:.4f} ({tasks} tasks x {samples} samples on 4 workers)")


if __name__ == "__main__":
    main()
