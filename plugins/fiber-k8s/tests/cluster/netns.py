"""The "netns" runtime: each pod in its own network and UTS namespace on a private bridge.

    host: bridge fbt<id> 10.244.77.1/24 (the pods' hostIP; a master on the host binds it)
      |-- veth fbt<id>v<n>  <->  eth0 10.244.77.<k>/24 in netns fbt<id>-<n>, hostname = pod name

Pods get no default route and an empty resolv.conf, and the host forwards nothing, so
their traffic can only reach the bridge and each other. ``/etc/netns/<ns>/hosts`` maps
the pod's name to its IP, as the kubelet's hosts file does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from .meta import LOG, Obj
from .podspec import Mount
from .runtime import ProcessRuntime, Sandbox, kill_quietly

_ETC = Path("/etc/netns")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def netns_unavailable() -> str | None:
    """Why the netns runtime cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the netns runtime needs root"
    for tool in ("ip", "unshare", "hostname", "mount"):
        if shutil.which(tool) is None:
            return f"the netns runtime needs `{tool}` (iproute2 / util-linux / hostname)"
    probe = f"fbtprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except RuntimeError as exc:
        return f"ip netns is unavailable: {exc}"
    return None


class NetnsRuntime(ProcessRuntime):
    """Processes in per-pod network namespaces joined by a host bridge."""

    name = "netns"

    def __init__(self, cluster_id: str, subnet: str | None = None):
        super().__init__()
        self._bridge = f"fbt{cluster_id}"
        self._subnet = subnet
        self._free: list[str] = []
        self._prefixlen = 24
        self._count = 0
        self._sandboxes: dict[str, Sandbox] = {}

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        if self._subnet:
            return ipaddress.IPv4Network(self._subnet)
        used = [ipaddress.ip_interface(a).network
                for a in re.findall(r"inet (\S+)", _ip("-4", "-o", "addr", "show"))]
        used += [ipaddress.ip_network(line.split()[0], strict=False)
                 for line in _ip("-4", "route", "show").splitlines()
                 if line and line.split()[0][0].isdigit()]
        for third in range(77, 127):
            network = ipaddress.IPv4Network(f"10.244.{third}.0/24")
            if not any(network.overlaps(u) for u in used):
                return network
        raise RuntimeError("no free 10.244.77-126.0/24 subnet for the test cluster's bridge")

    def start(self) -> None:
        network = self._pick_subnet()
        hosts = [str(h) for h in network.hosts()]
        self.host_ip, self._free, self._prefixlen = hosts[0], hosts[1:], network.prefixlen
        _ip("link", "add", self._bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_ip}/{self._prefixlen}", "dev", self._bridge)
        _ip("link", "set", self._bridge, "up")
        LOG.info("netns runtime: bridge %s on %s", self._bridge, network)

    def create_sandbox(self, pod: Obj) -> Sandbox:
        if pod["spec"].get("hostNetwork"):
            return Sandbox(ip=self.host_ip)
        with self._lock:
            if not self._free:
                raise RuntimeError("the test cluster's pod subnet is exhausted")
            ip, n = self._free.pop(0), self._count
            self._count += 1
        name = pod["metadata"]["name"]
        netns, veth = f"{self._bridge}-{n}", f"{self._bridge}v{n}"
        sandbox = Sandbox(ip=ip, netns=netns, link=veth, hostname=name)
        with self._lock:
            self._sandboxes[netns] = sandbox
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self._bridge, "up")
        _ip("-n", netns, "addr", "add", f"{ip}/{self._prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        etc = _ETC / netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{name}\n")
        (etc / "resolv.conf").write_text("# fiber test cluster: pods have no DNS\n")
        return sandbox

    def sandbox_pids(self, sandbox: Sandbox) -> list[int]:
        if not sandbox.netns:
            return []
        try:
            return [int(p) for p in _ip("netns", "pids", sandbox.netns).split()]
        except RuntimeError:
            return []

    def destroy_sandbox(self, sandbox: Sandbox) -> None:
        if not sandbox.netns:
            return
        with self._lock:
            if self._sandboxes.pop(sandbox.netns, None) is None:
                return
        kill_quietly(self.sandbox_pids(sandbox))
        # Deleting the host end removes the pair at once; a deleted netns goes lazily.
        for command in (("link", "del", sandbox.link), ("netns", "del", sandbox.netns)):
            try:
                _ip(*command)
            except RuntimeError as exc:
                LOG.warning("%s", exc)
        shutil.rmtree(_ETC / sandbox.netns, ignore_errors=True)
        with self._lock:
            self._free.append(sandbox.ip)

    def close(self) -> None:
        for sandbox in list(self._sandboxes.values()):
            self.destroy_sandbox(sandbox)
        try:
            _ip("link", "del", self._bridge)
        except RuntimeError as exc:
            LOG.warning("%s", exc)
        super().close()

    def _prefix(self, sandbox: Sandbox, mounts: list[Mount]) -> list[str]:
        if not sandbox.netns:  # hostNetwork: a plain process
            return super()._prefix(sandbox, mounts)
        # `ip netns exec` already gives the command a private mount namespace.
        return ["ip", "netns", "exec", sandbox.netns, "unshare", "--uts"]

    def _setup(self, sandbox: Sandbox) -> list[str]:
        return [f"hostname {shlex.quote(sandbox.hostname)}"] if sandbox.netns else []
