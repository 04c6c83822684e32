"""Step several simulator environments at once with AsyncManager.

Each environment lives in a manager process of its own (on the selected
backend); ``env.step(action)`` returns a handle at once, so all environments
step in parallel and ``.get()`` collects the results.

    python examples/async_managers.py
"""

from __future__ import annotations

import random
import time
from typing import Tuple

from fiber_core.managers import AsyncManager


class CartSimulator:
    """A small pure-Python simulator: a cart on a line that must stay near 0."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.position = 0.0
        self.velocity = 0.0

    def reset(self) -> float:
        self.position, self.velocity = self.rng.uniform(-1, 1), 0.0
        return self.position

    def step(self, action: float) -> Tuple[float, float, bool]:
        """Apply a force; return (observation, reward, done). Burns a little CPU
        (physics sub-steps), as a real simulator would."""
        for _ in range(20_000):
            self.velocity += 1e-5 * (action - 0.1 * self.velocity + self.rng.gauss(0, 0.1))
            self.position += 1e-5 * self.velocity
        done = abs(self.position) > 2.0
        return self.position, -abs(self.position), done


class SimulatorManager(AsyncManager):
    """An AsyncManager that can host simulators."""


SimulatorManager.register("CartSimulator", CartSimulator)


def main(environments: int = 4, steps: int = 10) -> None:
    managers = [SimulatorManager() for _ in range(environments)]
    for manager in managers:
        manager.start()
    try:
        envs = [manager.CartSimulator(seed) for seed, manager in enumerate(managers)]
        observations = [handle.get() for handle in [env.reset() for env in envs]]
        start = time.perf_counter()
        total = 0.0
        for _ in range(steps):
            actions = [-observation for observation in observations]
            handles = [env.step(action) for env, action in zip(envs, actions)]
            results = [handle.get() for handle in handles]  # all stepped in parallel
            observations = [observation for observation, _, _ in results]
            total += sum(reward for _, reward, _ in results)
        elapsed = time.perf_counter() - start
        print(f"{environments} environments x {steps} steps in {elapsed:.2f} s; "
              f"total reward {total:.3f}")
    finally:
        for manager in managers:
            manager.shutdown()


if __name__ == "__main__":
    main()
