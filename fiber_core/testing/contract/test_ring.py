"""Ring: ranked processes that find rank 0, and fail together."""

from __future__ import annotations

import importlib.util
import time

import pytest

import fiber_core
from fiber_core.ring import RingError
from fiber_core.testing.contract import shared_targets as targets


def test_members_learn_rank_size_and_rank0_address() -> None:
    results = fiber_core.Ring(3, targets.member_info).run(timeout=60)
    assert [r[:2] for r in results] == [(0, 3), (1, 3), (2, 3)]
    assert len({r[2:4] for r in results}) == 1  # one rank-0 address for all
    assert [r[4:] for r in results] == [
        (str(rank), "3", str(results[0][3])) for rank in range(3)]


def test_a_dead_rank_stops_the_ring() -> None:
    ring = fiber_core.Ring(3, targets.die_at_rank, args=(1,))
    start = time.monotonic()
    with pytest.raises(RingError, match=r"rank 1 of 3 died \(exit code -9\)"):
        ring.run(timeout=60)
    assert time.monotonic() - start < 30
    assert all(p.exitcode is not None for p in ring.processes)


def test_a_failing_rank_reports_its_traceback() -> None:
    with fiber_core.Ring(2, targets.raise_at_rank, args=(0,)) as ring, \
            pytest.raises(RingError, match="ValueError: rank 0 refuses"):
        ring.run(timeout=60)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (tox -e ring installs it)")
def test_torch_all_reduce_on_four_ranks() -> None:
    ring = fiber_core.Ring(4, targets.all_reduce, initializer=targets.gloo_setup)
    assert ring.run(timeout=110) == [[10.0, 10.0, 10.0]] * 4
