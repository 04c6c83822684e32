"""What each verb means per resource: defaults, validation, update rules, deletion, GC.

The garbage collector lives here too: when an object is deleted, the objects whose
ownerReferences name its uid are deleted (background cascade); an object created with
owners that all do not exist is deleted shortly after, as the real collector does.
"""

from __future__ import annotations

import base64
import copy
import datetime
import threading
from typing import Any, Callable, Protocol

from . import validation
from .faults import Faults
from .meta import (
    LOG,
    ApiError,
    Obj,
    bad_request,
    conflict,
    generated_name,
    invalid,
    meta,
    new_uid,
    not_found,
    now,
    owner_uids,
)
from .scheduler import qos_class
from .store import Event, Store

# resource -> (kind, namespaced)
RESOURCES = {"pods": ("Pod", True), "secrets": ("Secret", True),
             "namespaces": ("Namespace", False), "nodes": ("Node", False)}
_KINDS = {kind: resource for resource, (kind, _) in RESOURCES.items()}
_PROTECTED = ("default", "kube-system", "kube-public")
_POD_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("terminationGracePeriodSeconds", 30), ("dnsPolicy", "ClusterFirst"),
    ("schedulerName", "default-scheduler"), ("serviceAccountName", "default"),
    ("enableServiceLinks", True), ("securityContext", {}))
_SERVER_FIELDS = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generateName")
_POD_SPEC_FORBIDDEN = ("Forbidden: pod updates may not change fields other than "
                       "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                       "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                       "existing tolerations),`spec.terminationGracePeriodSeconds`")


class PodRuntime(Protocol):
    """What deleting a pod needs from the kubelet."""

    def running(self, uid: str) -> bool: ...
    def terminate(self, uid: str, grace: int) -> bool: ...
    def kill(self, uid: str) -> None: ...


def _injected_failure(code: int, namespace: str) -> ApiError:
    if code == 403:
        return ApiError(403, "Forbidden", 'pods is forbidden: User "system:serviceaccount:'
                        f'{namespace}:default" cannot create resource "pods" in API group "" '
                        f'in the namespace "{namespace}"',
                        {"kind": "pods"})
    return ApiError(code, "InternalError", "Internal error occurred: injected failure "
                    "(fiber test cluster)", {"causes": [{"message": "injected failure"}]})


def _merge_string_data(secret: Obj) -> None:
    data = secret.get("data") or {}
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    secret["data"] = data


class Registry:
    """Create, read, update, delete with the apiserver's rules, on top of a Store."""

    def __init__(self, store: Store, faults: Faults):
        self.store, self.faults = store, faults
        self.pods: PodRuntime | None = None
        store.subscribe(self._collect_garbage)

    @staticmethod
    def kind(resource: str) -> tuple[str, bool]:
        if resource not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return RESOURCES[resource]

    def create(self, resource: str, namespace: str, body: Any) -> Obj:
        kind, namespaced = self.kind(resource)
        if resource == "nodes":
            raise ApiError(405, "MethodNotAllowed", "nodes are read-only in the test cluster")
        if not isinstance(body, dict) or body.get("kind", kind) != kind:
            raise bad_request(f'{resource} in version "v1" cannot be handled as a {kind}')
        obj = copy.deepcopy(body)
        md = meta(obj)
        if namespaced:
            if md.get("namespace", namespace) != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            if self.store.find("namespaces", "", namespace) is None:
                raise not_found("namespaces", namespace)
            md["namespace"] = namespace
        if resource == "pods" and (code := self.faults.take_create_failure()):
            raise _injected_failure(code, namespace)
        if md.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not md.get("name"):
            if not md.get("generateName"):
                raise invalid(kind, "", [validation.cause("metadata.name", "FieldValueRequired",
                              "Required value: name or generateName is required")])
            limit = validation.POD_NAME_MAX if resource == "pods" else 253
            md["name"] = generated_name(md["generateName"], limit)
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            md.pop(key, None)
        md.update(uid=new_uid(), creationTimestamp=now())
        obj.update(kind=kind, apiVersion="v1")
        self._prepare(resource, obj)
        created = self.store.create(resource, obj)
        if md.get("ownerReferences"):
            timer = threading.Timer(0.2, self._collect_if_orphaned, (resource, created))
            timer.daemon = True
            timer.start()
        return created

    def _prepare(self, resource: str, obj: Obj) -> None:
        """Defaults and validation for a new object."""
        name = meta(obj)["name"]
        if resource == "pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            causes = validation.pod(obj)
            if causes:
                raise invalid("Pod", name, causes)
            for key, value in _POD_DEFAULTS:
                spec.setdefault(key, value)
            for container in spec["containers"]:
                tag = container["image"].rsplit("/", 1)[-1]
                latest = ":" not in tag or tag.endswith(":latest")
                container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("resources", {})
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj)}
        elif resource == "secrets":
            obj.setdefault("type", "Opaque")
            _merge_string_data(obj)
            if causes := validation.secret(obj):
                raise invalid("Secret", name, causes)
        elif resource == "namespaces":
            if causes := validation.object_meta(obj, 63, subdomain=False):
                raise invalid("Namespace", name, causes)
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        self.kind(resource)
        return self.store.get(resource, namespace, name)

    def list_objects(self, resource: str, namespace: str | None, match: Callable[[Obj], bool],
                     limit: int = 0, token: str = "") -> Obj:
        """A ``<Kind>List``; ``limit``/``continue`` page through it by namespace/name."""
        kind, _ = self.kind(resource)
        items, rv = self.store.list(resource, namespace, match)

        def key(obj: Obj) -> str:
            return f"{meta(obj).get('namespace', '')}/{meta(obj)['name']}"
        if token:
            start = base64.urlsafe_b64decode(token.encode()).decode()
            items = [item for item in items if key(item) > start]
        list_meta: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            list_meta["continue"] = base64.urlsafe_b64encode(key(items[-1]).encode()).decode()
        for item in items:  # list items carry no kind/apiVersion on the wire
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": list_meta, "items": items}

    def update(self, resource: str, namespace: str, name: str, subresource: str,
               change: Callable[[Obj], Any]) -> Obj:
        """PUT or PATCH: ``change`` maps the current object to the requested one."""
        kind, _ = self.kind(resource)
        if resource == "nodes":
            raise ApiError(405, "MethodNotAllowed", "nodes are read-only in the test cluster")

        def mutate(current: Obj) -> Obj:
            new = change(copy.deepcopy(current))
            if not isinstance(new, dict):
                raise bad_request(f"the request must produce a {kind} object")
            wanted_rv = meta(new).get("resourceVersion")
            if wanted_rv and wanted_rv != meta(current)["resourceVersion"]:
                raise conflict(resource, name, "the object has been modified; please apply your "
                               "changes to the latest version and try again")
            if subresource == "status":
                current["status"] = new.get("status") or {}
                return current
            md = meta(new)
            for key in _SERVER_FIELDS:
                if key in current["metadata"]:
                    md[key] = current["metadata"][key]
                else:
                    md.pop(key, None)
            new.update(kind=current["kind"], apiVersion="v1", status=current.get("status"))
            if resource == "pods" and new.get("spec") != current.get("spec"):
                raise invalid(kind, name, [validation.cause("spec", "FieldValueForbidden",
                                                            _POD_SPEC_FORBIDDEN)])
            if resource == "secrets":
                new.setdefault("type", current.get("type", "Opaque"))
                _merge_string_data(new)
                causes = validation.secret(new)
            else:
                causes = validation.object_meta(new, 253)
            if causes:
                raise invalid(kind, name, causes)
            return new
        return self.store.update(resource, namespace, name, mutate)

    def delete(self, resource: str, namespace: str, name: str, options: Obj) -> Obj:
        """DELETE with DeleteOptions (gracePeriodSeconds, propagationPolicy, preconditions)."""
        self.kind(resource)
        if resource == "nodes":
            raise ApiError(405, "MethodNotAllowed", "nodes are read-only in the test cluster")
        current = self.store.get(resource, namespace, name)
        if resource == "namespaces" and name in _PROTECTED:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace '
                           "may not be deleted", {"name": name, "kind": "namespaces"})
        uid = meta(current)["uid"]
        for field, actual in (("uid", uid), ("resourceVersion", meta(current)["resourceVersion"])):
            wanted = (options.get("preconditions") or {}).get(field)
            if wanted and wanted != actual:
                label = "UID" if field == "uid" else "ResourceVersion"
                raise conflict(resource, name, f"Precondition failed: {label} in precondition: "
                               f"{wanted}, {label} in object meta: {actual}")
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Orphan", "Background", "Foreground"):
            raise bad_request(f"unsupported propagationPolicy {policy!r}: "
                              "supported values: Orphan, Background, Foreground")
        if policy == "Orphan":
            self._orphan(uid)
        if resource == "pods":
            return self._delete_pod(current, options.get("gracePeriodSeconds"))
        if resource == "namespaces":
            for res in ("pods", "secrets"):
                for obj in self.store.list(res, name)[0]:
                    self._delete_quietly(res, obj)
            current["status"] = {"phase": "Terminating"}
            meta(current)["deletionTimestamp"] = now()
        self.store.delete(resource, namespace, name, missing_ok=True)
        if resource == "namespaces":
            return current
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "kind": resource, "uid": uid}}

    def _delete_pod(self, pod: Obj, grace: Any) -> Obj:
        """Graceful: set deletionTimestamp and let the kubelet remove the pod on exit."""
        assert self.pods is not None, "the kubelet is not attached"
        md = meta(pod)
        uid, namespace, name = md["uid"], md["namespace"], md["name"]
        grace = max(0, int(pod["spec"].get("terminationGracePeriodSeconds", 30)
                           if grace is None else grace))
        if "deletionTimestamp" in md and grace >= md.get("deletionGracePeriodSeconds", 0):
            return pod
        if grace > 0 and self.pods.running(uid):
            deadline = datetime.datetime.now(datetime.timezone.utc)
            deadline += datetime.timedelta(seconds=grace)

            def mark(obj: Obj) -> Obj:
                meta(obj).update(deletionTimestamp=deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 deletionGracePeriodSeconds=grace)
                return obj
            updated = self.store.update("pods", namespace, name, mark)
            if self.pods.terminate(uid, grace):
                return updated
        self.pods.kill(uid)
        return self.store.delete("pods", namespace, name, missing_ok=True) or pod

    def _delete_quietly(self, resource: str, obj: Obj) -> None:
        """Delete this very object (by uid) if it still exists."""
        md = meta(obj)
        try:
            self.delete(resource, md.get("namespace", ""), md["name"],
                        {"preconditions": {"uid": md["uid"]}})
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    def _dependents(self, uid: str) -> list[tuple[str, Obj]]:
        return [(res, obj) for res in ("pods", "secrets")
                for obj in self.store.list(res, None, lambda o: uid in owner_uids(o))[0]]

    def _orphan(self, uid: str) -> None:
        def drop(obj: Obj) -> Obj:
            refs = [r for r in meta(obj).get("ownerReferences") or [] if r.get("uid") != uid]
            meta(obj)["ownerReferences"] = refs
            if not refs:
                del meta(obj)["ownerReferences"]
            return obj
        for resource, obj in self._dependents(uid):
            self.store.update(resource, meta(obj)["namespace"], meta(obj)["name"], drop)

    def _collect_garbage(self, event: Event) -> None:
        if event.type != "DELETED":
            return
        for resource, obj in self._dependents(meta(event.obj)["uid"]):
            LOG.debug("garbage-collecting %s %s", resource, meta(obj)["name"])
            self._delete_quietly(resource, obj)

    def _collect_if_orphaned(self, resource: str, created: Obj) -> None:
        """Delete an object all of whose owners (of kinds served here) do not exist."""
        md = meta(created)
        obj = self.store.find(resource, md["namespace"], md["name"])
        if obj is None or meta(obj)["uid"] != md["uid"]:
            return
        refs = meta(obj).get("ownerReferences") or []
        if not refs or any(ref.get("kind") not in _KINDS for ref in refs):
            return
        for ref in refs:
            owner_resource = _KINDS[ref["kind"]]
            namespace = meta(obj)["namespace"] if RESOURCES[owner_resource][1] else ""
            owners = self.store.list(owner_resource, namespace)[0]
            if any(meta(owner)["uid"] == ref["uid"] for owner in owners):
                return
        LOG.debug("garbage-collecting %s %s: its owners do not exist", resource, meta(obj)["name"])
        try:
            self._delete_quietly(resource, obj)
        except ApiError:
            LOG.exception("garbage collection of %s failed", meta(obj)["name"])
