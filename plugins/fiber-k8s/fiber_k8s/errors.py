"""The errors fiber-k8s raises to its users (importable without the kubernetes client)."""


class PodPendingError(RuntimeError):
    """A pod could not start (unschedulable, image not pullable) within k8s_pending_timeout."""
