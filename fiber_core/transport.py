"""The wire: authenticated zmq sockets and pickling with out-of-band buffers.

Every Fiber process of a run shares one secret: a CURVE secret key. A server
socket admits a peer only when it proves it holds that key (CURVE, encrypted:
the default when the address is reachable from other hosts) or sends it as a
PLAIN password (the default on loopback, where the only eavesdropper is root). The check runs in
a ZAP handler, during the handshake, before any message reaches the program, so
nothing from a stranger is ever unpickled.

Messages are lists of frames: a cloudpickle header, then each out-of-band
buffer (pickle protocol 5) as a frame of its own, so large arrays are never
copied into one bytes object.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import pickle
import sys
from typing import Any, List, Optional, Sequence, Union

import cloudpickle
import zmq
from zmq.utils import z85

logger = logging.getLogger("fiber")

Frame = Union[bytes, memoryview, zmq.Frame, pickle.PickleBuffer]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_PLAIN_USER = b"fiber"
CURVE_SCHEME = "curve+"


def new_secret() -> str:
    """A fresh run secret (a z85-encoded CURVE secret key)."""
    return zmq.curve_keypair()[1].decode("ascii")


def _public(secret: str) -> bytes:
    return zmq.curve_public(secret.encode("ascii"))


def host_of(address: str) -> str:
    """``tcp://HOST:PORT`` -> HOST (without IPv6 brackets)."""
    return address.split("//", 1)[-1].rsplit(":", 1)[0].strip("[]")


def is_loopback(host: str) -> bool:
    """True for 127.x.x.x, ::1 and localhost: traffic that stays on this host."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def context() -> zmq.Context:
    """The process's zmq context."""
    return zmq.Context.instance()


def bind(sock: zmq.Socket, host: str, secret: str, encrypt: Optional[bool] = None) -> str:
    """Make ``sock`` an authenticating server on ``host``; return its address.

    ``encrypt`` (default: unless ``host`` is loopback) selects CURVE; the
    address says so (``curve+tcp://``), so that clients follow."""
    endpoint = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
    sock.ipv6 = ":" in host
    if encrypt is None:
        encrypt = not is_loopback(host)
    if encrypt:
        sock.curve_server = True
        sock.curve_secretkey = secret.encode("ascii")
    else:
        sock.plain_server = True
    port = sock.bind_to_random_port(endpoint)
    return f"{CURVE_SCHEME if encrypt else ''}{endpoint}:{port}"


def connect(sock: zmq.Socket, address: str, secret: str) -> None:
    """Connect ``sock`` to a server made by :func:`bind`, proving we hold ``secret``."""
    if not address.startswith(CURVE_SCHEME):
        sock.plain_username = _PLAIN_USER
        sock.plain_password = secret.encode("ascii")
    else:
        address = address[len(CURVE_SCHEME):]
        public = _public(secret)
        sock.curve_serverkey = public
        sock.curve_publickey = public
        sock.curve_secretkey = secret.encode("ascii")
    sock.ipv6 = address.startswith("tcp://[")
    sock.connect(address)


class Authenticator:
    """A ZAP handler: admits exactly the peers that hold the run's secret."""

    def __init__(self, secret: str) -> None:
        self._password = secret.encode("ascii")
        self._public_key = z85.decode(_public(secret))
        self.socket = context().socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)

    def handle(self) -> None:
        """Answer one pending ZAP request (call when the socket is readable)."""
        version, request_id, _domain, peer, _identity, mechanism, *credentials = (
            self.socket.recv_multipart())
        if mechanism == b"PLAIN" and len(credentials) == 2:
            allowed = hmac.compare_digest(credentials[1], self._password)
        elif mechanism == b"CURVE" and len(credentials) == 1:
            allowed = hmac.compare_digest(credentials[0], self._public_key)
        else:
            allowed = False
        if not allowed:
            logger.warning("refused a connection from %s: it does not hold the run's secret",
                           peer.decode(errors="replace"))
        status = (b"200", b"OK") if allowed else (b"400", b"no valid credentials")
        self.socket.send_multipart([version, request_id, *status, b"", b""])

    def close(self) -> None:
        # Unbind first: closing alone frees the endpoint only later, and a hub
        # started next in this process could not bind its handler.
        self.socket.unbind(ZAP_ENDPOINT)
        self.socket.close()


def dumps(obj: Any) -> List[Frame]:
    """Pickle ``obj`` into frames: the pickle, then its out-of-band buffers."""
    buffers: List[pickle.PickleBuffer] = []
    header = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [header, *(buffer.raw() for buffer in buffers)]


def loads(frames: Sequence[Frame]) -> Any:
    """Unpickle frames made by :func:`dumps`."""
    header, *buffers = (frame.buffer if isinstance(frame, zmq.Frame) else frame
                        for frame in frames)
    return pickle.loads(header, buffers=buffers)


def python_version() -> str:
    """``major.minor``: cloudpickle needs the same one at both ends."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"

