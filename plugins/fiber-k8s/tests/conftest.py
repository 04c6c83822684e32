"""Fixtures for the fiber-k8s tests: a fake Kubernetes cluster whose pods really run.

``k8s_cluster`` is a started :class:`cluster.Cluster` (process runtime) with
``KUBECONFIG`` pointing at it for the test, so ``kubernetes.config.load_kube_config()``
and ``load_config()`` without arguments reach it. ``k8s_netns_cluster`` is the same
with one network namespace per pod; it skips where ``ip netns`` cannot be used.

When the contract suite runs against the kubernetes backend (``--pyargs
fiber_core.testing.contract --fiber-backend kubernetes``), one cluster serves the whole
session: ``pytest_configure`` starts it and points ``KUBECONFIG`` and the ``FIBER_*``
keys at it, so the suite itself stays unchanged; ``pytest_sessionfinish`` ends the
run and fails the session if a pod, Secret or pod process of it is left.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cluster import DEFAULT_PASSTHROUGH, Cluster, netns_unavailable  # noqa: E402
from cluster.runtime import marked_pids  # noqa: E402

BACKEND = "kubernetes"
TEST_IMAGE = "fiber-test:1"
"""The test cluster ignores images; any valid name does."""
_session_cluster = pytest.StashKey[Cluster]()


def fiber_env(cluster: Cluster, **extra: str) -> Dict[str, str]:
    """The environment a master needs to use ``cluster``: KUBECONFIG and FIBER_* keys.

    Pods of the process runtime run on this host, so the interpreter is this one."""
    return {**cluster.env, "FIBER_BACKEND": BACKEND, "FIBER_IMAGE": TEST_IMAGE,
            "FIBER_K8S_PYTHON": sys.executable, **extra}


def leftovers(cluster: Cluster) -> List[str]:
    """Pods, Secrets and pod processes still in ``cluster`` (none after a clean run)."""
    found = [f"pod {p['metadata']['name']}" for p in cluster.store.list("pods")[0]]
    found += [f"secret {s['metadata']['name']}" for s in cluster.store.list("secrets")[0]]
    found += [f"process {pid}" for pid in marked_pids(f"{cluster.id}/")]
    return found


def wait_clean(cluster: Cluster, timeout: float = 10.0) -> List[str]:
    """Wait until ``cluster`` holds nothing of any run; what is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(cluster)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def nesting_cluster(workdir: Path, **options: Any) -> Cluster:
    """A started cluster whose pods may start pods: they get its ``KUBECONFIG`` (which
    the process runtime's pods can use as it is), as in-cluster config would."""
    os.environ["KUBECONFIG"] = str(workdir / "kubeconfig")  # read when the kubelet is made
    return Cluster(workdir, env_passthrough=(*DEFAULT_PASSTHROUGH, "KUBECONFIG"),
                   **options).start()


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--fiber-backend", default=None) or []
    if BACKEND not in chosen and os.environ.get("FIBER_TEST_BACKEND") != BACKEND:
        return
    cluster = nesting_cluster(Path(tempfile.mkdtemp(prefix="fiber-k8s-contract-")))
    config.stash[_session_cluster] = cluster
    os.environ.update(fiber_env(cluster))
    del os.environ["FIBER_BACKEND"]  # the suite chooses it with init()


def pytest_sessionfinish(session: pytest.Session) -> None:
    cluster = session.config.stash.get(_session_cluster, None)
    if cluster is None:
        return
    from fiber_core import context
    context._close()  # the run ends now, not at exit when the cluster is gone
    left = wait_clean(cluster)
    cluster.stop()
    shutil.rmtree(cluster.workdir, ignore_errors=True)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the kubernetes run left behind: {', '.join(left)}", red=True)


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


@pytest.fixture
def k8s_nesting_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A started process-runtime cluster whose pods may start pods (see nesting_cluster);
    the test fails if a pod, Secret or pod process is left at its end."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "k8s" / "kubeconfig"))
    cluster = nesting_cluster(tmp_path / "k8s", node_capacity={"nvidia.com/gpu": "1"})
    try:
        _point_client_at(cluster, monkeypatch)
        yield cluster
        left = wait_clean(cluster)
        assert not left, f"left behind: {left}"
    finally:
        cluster.stop()
