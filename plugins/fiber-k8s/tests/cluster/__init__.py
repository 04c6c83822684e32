"""A Kubernetes test cluster without Kubernetes, for end-to-end tests of fiber-k8s.

A fake API server (stdlib ``http.server`` on 127.0.0.1, plain HTTP, bearer token) plus
a kubelet that really runs each pod's command, so that the official ``kubernetes``
client (tested with 31.x and 37.x) works unchanged::

    with Cluster() as cluster:                      # or the k8s_cluster fixture
        api = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))

Runtimes: "process" runs each container as a local process group (pod IP and host IP
127.0.0.1, the host's hostname); "netns" (root) gives each pod its own network and UTS
namespace on a private bridge, so pods have their own IP and hostname (= pod name).
Containers get the pod's env plus PATH, HOME, the ``env_passthrough`` variables,
HOSTNAME and KUBERNETES_SERVICE_HOST/PORT; ``Cluster.pod_kubeconfig()`` is a
kubeconfig that works from inside pods.

Implemented faithfully: pods, secrets, namespaces (and a read-only node) with
server-filled metadata, Status errors, label/field selectors, watches with
resourceVersion resume and 410 on compacted history, strategic/merge/JSON patches,
graceful deletion, ownerReference garbage collection, container logs, env from
secrets and the downward API, secret/emptyDir/hostPath volumes, list paging.

Deliberately refused (422): restartPolicy other than Never (so also the default,
Always), init and ephemeral containers, other volume types, subPath; pod names longer
than 63 characters. dryRun is refused with 400.

What it cannot prove: real scheduling and resource enforcement (requests are only
summed against the node's capacity), image pulls (images are ignored; commands run
on the host), in-cluster service-account auth, RBAC and TLS, admission defaults,
finalizers, Foreground deletion (treated as Background), real GC timing (synchronous
here), restarts, probes and evictions.
"""

from .faults import UNSCHEDULABLE
from .harness import DEFAULT_PASSTHROUGH, Cluster
from .netns import netns_unavailable

__all__ = ["DEFAULT_PASSTHROUGH", "UNSCHEDULABLE", "Cluster", "netns_unavailable"]
