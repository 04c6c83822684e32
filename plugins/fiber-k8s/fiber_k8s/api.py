"""Talking to the Kubernetes API: the client, raw JSON calls, and this process's own pod.

Objects travel as plain dicts (``_preload_content=False``): the same code then works
with every supported client version, and nothing is deserialised into models twice.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlparse

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from fiber_k8s.environment import NAMESPACE_FILE, in_cluster
from fiber_k8s.manifests import Obj

logger = logging.getLogger("fiber")

def new_client() -> client.ApiClient:
    """An ApiClient from ``$KUBECONFIG`` (or ~/.kube/config), else the in-cluster config."""
    path = os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    if not path and in_cluster():
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    try:
        return config.new_client_from_config(config_file=path or default)
    except (config.ConfigException, OSError) as error:
        raise RuntimeError(
            f"cannot configure the Kubernetes client: {error}; point KUBECONFIG at a "
            "kubeconfig file, or run inside a pod with a service account") from None


def context_namespace() -> str:
    """The namespace of the current kubeconfig context, or of this pod, else 'default'."""
    try:
        _, active = config.list_kube_config_contexts(os.environ.get("KUBECONFIG"))
        namespace = active["context"].get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, OSError, KeyError, TypeError):
        pass
    try:
        with open(NAMESPACE_FILE) as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


class Api:
    """The CoreV1 calls the backend makes, answering plain dicts."""

    def __init__(self, api_client: Optional[client.ApiClient] = None) -> None:
        self.client = api_client or new_client()
        self.core = client.CoreV1Api(self.client)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Obj:
        """Call a CoreV1Api method and return its JSON answer as a dict."""
        response = getattr(self.core, method)(*args, _preload_content=False, **kwargs)
        data = response.data
        return json.loads(data) if data else {}

    def stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Start a streaming call (a watch, followed logs); the caller closes the response."""
        return getattr(self.core, method)(*args, _preload_content=False, **kwargs)

    def delete_pod(self, name: str, namespace: str, grace: int) -> None:
        """Delete a pod; one already gone is no error."""
        self._delete(self.core.delete_namespaced_pod, name, namespace, grace)

    def delete_secret(self, name: str, namespace: str) -> None:
        """Delete a secret; one already gone is no error."""
        self._delete(self.core.delete_namespaced_secret, name, namespace, 0)

    @staticmethod
    def _delete(method: Callable[..., Any], name: str, namespace: str, grace: int) -> None:
        try:
            method(name, namespace, grace_period_seconds=grace, _preload_content=False)
        except ApiException as error:
            if error.status != 404:
                raise

    def api_server_host(self) -> str:
        """The host name or IP of the API server this client talks to."""
        return urlparse(self.client.configuration.host).hostname or "127.0.0.1"

    def close(self) -> None:
        self.client.close()


def iter_lines(response: Any) -> Iterator[bytes]:
    """The newline-separated lines of a streaming response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending
