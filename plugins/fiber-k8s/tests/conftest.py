"""Fixtures for the fiber-k8s tests: a fake Kubernetes cluster whose pods really run.

``k8s_cluster`` is a started :class:`cluster.Cluster` (process runtime) with
``KUBECONFIG`` pointing at it for the test, so ``kubernetes.config.load_kube_config()``
and ``load_config()`` without arguments reach it. ``k8s_netns_cluster`` is the same
with one network namespace per pod; it skips where ``ip netns`` cannot be used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cluster import Cluster, netns_unavailable  # noqa: E402


def _point_client_at(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    try:  # the client reads KUBECONFIG once, at import
        import kubernetes.config
        import kubernetes.config.kube_config
    except ImportError:
        return
    for module in (kubernetes.config, kubernetes.config.kube_config):
        monkeypatch.setattr(module, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))


@pytest.fixture
def k8s_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A started test cluster (process runtime); KUBECONFIG points at it."""
    with Cluster(tmp_path / "k8s") as cluster:
        _point_client_at(cluster, monkeypatch)
        yield cluster


@pytest.fixture
def k8s_netns_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A started test cluster giving each pod its own IP and hostname; needs root."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    with Cluster(tmp_path / "k8s", runtime="netns") as cluster:
        _point_client_at(cluster, monkeypatch)
        yield cluster
