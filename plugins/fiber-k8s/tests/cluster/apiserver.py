"""The HTTP front end: routing, query parameters as Go parses them, Status errors, streams.

Serves ``/version``, ``/api``, ``/apis``, ``/api/v1`` discovery, and for pods, secrets,
namespaces and (read-only) nodes: list, watch, create, get, replace, patch, delete and
deletecollection, plus ``pods/{name}/status`` and ``pods/{name}/log``. Watches and
followed logs are chunked responses; a bearer token is required except for /version
and the health endpoints.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from . import patch
from .faults import Faults
from .kubelet import Kubelet
from .labels import field_selector, label_selector
from .meta import LOG, ApiError, Obj, bad_request, gone, meta
from .registry import RESOURCES, Registry
from .store import Store

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fiber-test",
           "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z",
           "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"}
_RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
API_RESOURCES = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": _RW,
     "shortNames": ["po"]},
    {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod",
     "verbs": ["get", "patch", "update"]},
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
     "verbs": _RW},
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
     "shortNames": ["ns"]},
    {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
     "verbs": ["get", "list", "watch"], "shortNames": ["no"]},
]}
_PUBLIC = {"version", "healthz", "livez", "readyz"}
_SUBRESOURCES = {("pods", "status"), ("pods", "log")}
_TRUE = {"1", "t", "T", "true", "True", "TRUE"}
_FALSE = {"", "0", "f", "F", "false", "False", "FALSE"}


def parse_bool(name: str, value: str | None) -> bool:
    """A query boolean as Go's strconv.ParseBool reads it."""
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise bad_request(f'invalid value for {name}: strconv.ParseBool: parsing "{value}": '
                      "invalid syntax")


def parse_int(name: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'invalid value for {name}: strconv.ParseInt: parsing "{value}": '
                          "invalid syntax") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: ApiServer):
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a pod killed mid-request) is normal, not a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api.connections.add(self.connection)

    def finish(self) -> None:
        self.server.api.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing -------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._streaming = False
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            body = self._body()
            api = self.server.api
            if parts and parts[0] not in _PUBLIC and \
                    self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            self._route(parts, body)
        except ApiError as exc:
            self._fail(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            LOG.exception("%s %s failed", self.command, self.path)
            self._fail(ApiError(500, "InternalError", f"Internal error occurred: {exc}"))

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from None

    def _fail(self, exc: ApiError) -> None:
        if self._streaming:  # too late for a status code: cut the stream
            self.close_connection = True
        else:
            self._json(exc.code, exc.status())

    def _send(self, code: int, content_type: str, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, code: int, obj: Obj) -> None:
        self._send(code, "application/json", json.dumps(obj, separators=(",", ":")).encode())

    def _begin_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._streaming = True

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    # -- routes ---------------------------------------------------------------------

    def _route(self, parts: list[str], body: Any) -> None:
        api = self.server.api
        fixed: dict[tuple[str, ...], Callable[[], Obj]] = {
            ("version",): lambda: VERSION,
            ("api",): lambda: {"kind": "APIVersions", "versions": ["v1"],
                               "serverAddressByClientCIDRs": [
                                   {"clientCIDR": "0.0.0.0/0", "serverAddress": api.address}]},
            ("apis",): lambda: {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
            ("api", "v1"): lambda: API_RESOURCES,
        }
        if len(parts) == 1 and parts[0] in _PUBLIC - {"version"}:
            return self._send(200, "text/plain", b"ok")
        if tuple(parts) in fixed:
            return self._json(200, fixed[tuple(parts)]())
        rest = parts[2:] if parts[:2] == ["api", "v1"] else []
        if len(rest) >= 3 and rest[0] == "namespaces" and RESOURCES.get(rest[2], ("", False))[1]:
            namespace: str | None = rest[1]
            resource, tail = rest[2], rest[3:]
        elif rest and rest[0] in RESOURCES:
            resource, tail = rest[0], rest[1:]
            namespaced = RESOURCES[resource][1]
            namespace = None if namespaced else ""
            if namespaced and tail:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(tail) > 2 or (len(tail) == 2 and (resource, tail[1]) not in _SUBRESOURCES):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if self.query.get("dryRun"):
            raise bad_request("dryRun is not supported by the fiber test cluster")
        if tail:
            sub = tail[1] if len(tail) > 1 else ""
            return self._object(resource, namespace or "", tail[0], sub, body)
        return self._collection(resource, namespace, body)

    def _selectors(self, resource: str) -> Callable[[Obj], bool]:
        labels = label_selector(self.query.get("labelSelector"))
        fields = field_selector(resource, self.query.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj)

    def _collection(self, resource: str, namespace: str | None, body: Any) -> None:
        api = self.server.api
        match = self._selectors(resource)
        if self.command == "GET":
            if parse_bool("watch", self.query.get("watch")):
                return self._watch(resource, namespace, match)
            limit = parse_int("limit", self.query.get("limit")) or 0
            token = self.query.get("continue", "")
            return self._json(200, api.registry.list_objects(resource, namespace, match, limit,
                                                             token))
        if self.command == "POST" and namespace is not None:
            return self._json(201, api.registry.create(resource, namespace, body))
        if self.command == "DELETE" and namespace:
            options = self._delete_options(body)
            for obj in api.store.list(resource, namespace, match)[0]:
                try:
                    api.registry.delete(resource, namespace, meta(obj)["name"], options)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
            return self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success"})
        raise ApiError(405, "MethodNotAllowed", f"{self.command} is not allowed on {resource}")

    def _delete_options(self, body: Any) -> Obj:
        options: Obj = {k: self.query[k] for k in ("propagationPolicy",) if k in self.query}
        grace = parse_int("gracePeriodSeconds", self.query.get("gracePeriodSeconds"))
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if "orphanDependents" in self.query:
            options["orphanDependents"] = parse_bool("orphanDependents",
                                                     self.query["orphanDependents"])
        options.update({k: v for k, v in (body or {}).items() if v is not None})
        if options.get("dryRun"):
            raise bad_request("dryRun is not supported by the fiber test cluster")
        return options

    def _object(self, resource: str, namespace: str, name: str, sub: str, body: Any) -> None:
        registry = self.server.api.registry
        if sub == "log":
            if self.command != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{self.command} not allowed on pods/log")
            return self._log(namespace, name)
        if self.command == "GET":
            return self._json(200, registry.get(resource, namespace, name))
        if self.command == "PUT":
            return self._json(200, registry.update(resource, namespace, name, sub, lambda _: body))
        if self.command == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            return self._json(200, registry.update(
                resource, namespace, name, sub, lambda cur: patch.apply(cur, content_type, body)))
        if self.command == "DELETE" and not sub:
            options = self._delete_options(body)
            return self._json(200, registry.delete(resource, namespace, name, options))
        raise ApiError(405, "MethodNotAllowed", f"{self.command} is not allowed here")

    def _watch(self, resource: str, namespace: str | None, match: Callable[[Obj], bool]) -> None:
        api = self.server.api
        rv = self.query.get("resourceVersion", "")
        since = None if rv in ("", "0") else parse_int("resourceVersion", rv)
        timeout = parse_int("timeoutSeconds", self.query.get("timeoutSeconds"))
        self._begin_stream("application/json")
        try:
            if api.faults.take_expired_watch():
                raise gone(f"too old resource version: {rv or 0} ({api.store.resource_version})")
            for item in api.store.watch(resource, namespace, match, since, timeout):
                if item is None:
                    if self._client_gone():
                        return
                    continue
                event = {"type": item[0], "object": item[1]}
                self._chunk(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        except ApiError as exc:
            self._chunk(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
        self._end_stream()

    def _log(self, namespace: str, name: str) -> None:
        api = self.server.api
        pod = api.registry.get("pods", namespace, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = self.query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise bad_request(f"a container name must be specified for pod {name}, "
                              f"choose one of: [{' '.join(names)}]")
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if parse_bool("previous", self.query.get("previous")):
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" '
                              "not found")
        path = api.kubelet.log_path(meta(pod)["uid"], container)
        if path is None:
            waiting = [s["state"].get("waiting", {}).get("reason") for s in
                       pod["status"].get("containerStatuses") or [] if s["name"] == container]
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: '
                              f"{(waiting and waiting[0]) or 'ContainerCreating'}")
        tail = parse_int("tailLines", self.query.get("tailLines"))
        limit = parse_int("limitBytes", self.query.get("limitBytes"))
        with open(path, "rb") as log:
            data = log.read()
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
            if not parse_bool("follow", self.query.get("follow")):
                return self._send(200, "text/plain", data[:limit] if limit else data)
            self._begin_stream("text/plain")
            self._chunk(data)
            while not self._client_gone():
                more = log.read()
                if more:
                    self._chunk(more)
                elif self._container_ended(namespace, name, container):
                    self._chunk(log.read())
                    break
                else:
                    time.sleep(0.05)
        self._end_stream()

    def _container_ended(self, namespace: str, name: str, container: str) -> bool:
        api = self.server.api
        pod = api.store.find("pods", namespace, name)
        if pod is None or api.closed:
            return True
        return any("terminated" in s["state"] for s in pod["status"].get("containerStatuses") or []
                   if s["name"] == container)


class ApiServer:
    """Serves the registry over HTTP on each of ``hosts`` (one port for all)."""

    def __init__(self, store: Store, registry: Registry, kubelet: Kubelet, faults: Faults,
                 token: str):
        self.store, self.registry, self.kubelet, self.faults = store, registry, kubelet, faults
        self.token = token
        self.port = 0
        self.closed = False
        self.connections: set[socket.socket] = set()
        self._servers: list[_Server] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, hosts: list[str], port: int = 0) -> None:
        for host in hosts:
            server = _Server((host, port or self.port), self)
            self.port = server.server_address[1]
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                             name=f"testcluster-http-{host}").start()
        LOG.info("test cluster API server on %s port %d", ", ".join(hosts), self.port)

    def stop(self) -> None:
        self.closed = True
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._servers.clear()
