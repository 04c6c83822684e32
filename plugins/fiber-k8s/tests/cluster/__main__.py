"""Serve a test cluster until SIGTERM or SIGINT.

    python plugins/fiber-k8s/tests/cluster/__main__.py --kubeconfig PATH [--runtime netns]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

if __package__:
    from .harness import Cluster
else:  # run by path: import the package from its parent folder, not from inside it
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from cluster.harness import Cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True, type=Path,
                        help="where to write the kubeconfig")
    parser.add_argument("--runtime", choices=("process", "netns"), default="process")
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free one)")
    parser.add_argument("--capacity", action="append", default=[], metavar="NAME=QUANTITY",
                        help="node capacity, e.g. cpu=4 or nvidia.com/gpu=1 (repeatable)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    capacity = dict(item.split("=", 1) for item in args.capacity)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with Cluster(runtime=args.runtime, node_capacity=capacity, port=args.port) as cluster:
        args.kubeconfig.write_text(cluster.kubeconfig.read_text())
        print(f"test cluster at {cluster.url}; KUBECONFIG={args.kubeconfig}", flush=True)
        done.wait()
    print("test cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
