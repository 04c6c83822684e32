"""Four ranks sum a tensor with torch.distributed (gloo, CPU) on a fiber_core Ring.

    pip install torch==2.13.0 && python examples/ring_allreduce.py
"""

from __future__ import annotations

import os
from typing import List

import fiber_core
from fiber_core import transport
from fiber_core.ring import RingMember


def join_group(member: RingMember) -> None:
    """Form the gloo group: every rank knows rank 0's address from the ring."""
    import torch.distributed as dist

    if transport.is_loopback(member.address):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=member.init_method, rank=member.rank,
                            world_size=member.size)


def all_reduce(member: RingMember) -> List[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.full((3,), float(member.rank + 1))
    dist.all_reduce(tensor)
    dist.destroy_process_group()
    return tensor.tolist()


if __name__ == "__main__":
    results = fiber_core.Ring(4, all_reduce, initializer=join_group).run(timeout=300)
    print("rank results:", results)  # every rank: [10.0, 10.0, 10.0]
