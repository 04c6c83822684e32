"""Where this process runs: inside a pod or not, and what the downward API says.

Standard library only, so that detecting the environment costs no client import.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

logger = logging.getLogger("fiber")

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POD_NAME_ENV, POD_NAMESPACE_ENV, POD_IP_ENV = "POD_NAME", "POD_NAMESPACE", "POD_IP"
"""Downward-API variables naming the pod a process runs in (set on every pod we make)."""


def in_cluster() -> bool:
    """Whether this process runs in a pod with a service-account token."""
    return "KUBERNETES_SERVICE_HOST" in os.environ and os.path.exists(TOKEN_FILE)


def own_pod_name(configured: Optional[str]) -> Optional[str]:
    """This process's pod: ``POD_NAME`` from the downward API, else the configured name."""
    return os.environ.get(POD_NAME_ENV) or configured


def own_namespace() -> Optional[str]:
    return os.environ.get(POD_NAMESPACE_ENV)


def route_address(host: str) -> str:
    """This host's address on the route to ``host`` (no packet is sent)."""
    try:
        target = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 443))
            return str(probe.getsockname()[0])
    except OSError as error:
        logger.warning("cannot find this host's address towards %s (%s); advertising "
                       "127.0.0.1: set k8s_master_address", host, error)
        return "127.0.0.1"
