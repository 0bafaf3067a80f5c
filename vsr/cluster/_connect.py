"""Connecting to Ray: a cluster at an address, or a Ray that vsr starts on this machine, on loopback only.

Ray's ports let whoever reaches them run code (CVE-2023-48022; Ray 2.60 adds token
authentication, which a cluster's operator sets up): so a Ray that vsr starts binds
every port to 127.0.0.1 and has no dashboard, and a real cluster belongs on a private
network (docs/CLUSTER.md). An address that does not answer is a one-line error within
about :data:`CONNECT_TIMEOUT_S` seconds instead of Ray's long retries.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("vsr")

CONNECT_TIMEOUT_S = 15.0
# What a Ray that vsr starts keeps for objects: segments travel as files, not through it.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _loopback(address: str | None) -> bool:
    return address is None or address.rpartition(":")[0] in _LOOPBACK


def import_ray(address: str | None = None) -> Any:
    """The ``ray`` module, or a one-line error saying how to install it.

    For a Ray on this machine (``address`` None or on loopback) Ray is told, before it is
    imported, to keep to loopback: otherwise it swaps 127.0.0.1 for the machine's
    external address. Ray reads that setting once, at import. Ray's usage reports to its
    vendor are turned off the same way, unless the environment says otherwise.
    """
    if _loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray reports usage statistics to its vendor over the internet unless told not to; vsr never
    # sends anything off the machine on its own (a user who wants it sets RAY_USAGE_STATS_ENABLED=1).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'vsr[ray]' (or choose --executor local)") from None
    return ray


@dataclass
class Connection:
    """A live connection to Ray; :meth:`close` stops the Ray that vsr started, or disconnects."""

    ray: Any
    started: bool  # vsr started this Ray (and stops it at the end)
    owned: bool  # vsr called ray.init (and calls ray.shutdown at the end)

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def _probe(address: str) -> None:
    """A TCP connection to the GCS within the timeout, or a one-line error (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://") or not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: give host:port of the head node (its GCS port, 6379 "
                          "by default), or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise ConfigError(f"--ray-address {address}: no Ray cluster answers there ({reason}); start one with "
                          "'ray start --head' or check the address") from None


def connect(address: str | None) -> Connection:
    """Join the cluster at ``address`` ("host:port" or "auto"), or start a Ray here (None)."""
    ray = import_ray(address)
    if ray.is_initialized():  # a caller (or a test) connected already: use that Ray, leave it running
        return Connection(ray, started=False, owned=False)
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES,
                 _node_ip_address="127.0.0.1", **common)
        return Connection(ray, started=True, owned=True)
    if address != "auto":
        _probe(address)
    if _loopback(address):
        common["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if not os.environ.get("RAY_AUTH_MODE"):
            # Ray says only "failed to connect" when the cluster wants a token this driver did not send
            # (`ray start --head` turns token authentication on from Ray 2.60; a driver joining an
            # address does not turn it on by itself, even with the token at ~/.ray/auth_token).
            hint = ("; if the cluster uses Ray's token authentication (ray start's default from Ray 2.60), "
                    "run with RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token")
        raise ConfigError(f"--ray-address {address}: cannot join the Ray cluster ({first}){hint}") from None
    return Connection(ray, started=False, owned=True)
