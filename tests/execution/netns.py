"""Separate networks on one machine: one Linux network namespace per party.

:func:`party_networks` makes, for ``n`` parties, a bridge in the test's namespace
(the "internet" between the organizations, with the test as every client), and per
party a namespace with

* ``eth0``: a veth on that bridge with the party's public address ``10.231.<k>.<i+1>``;
* its own loopback, where the party's services reach each other, which also carries
  :data:`~tally.local_deployment.POD_ADDRESS`, the same in every namespace (as
  overlapping pod networks are), where workers listen.

So a party's workers are reachable from another party only through its public
endpoint: a peer that dialled a worker's own address would reach itself.  Everything
is removed on exit.  Needs root and the ``ip`` command (iproute2).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

from tally.local_deployment import POD_ADDRESS


def available() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def party_networks(parties: int) -> Iterator[list[tuple[str, str]]]:
    """(namespace, public address) per party, removed on exit."""
    tag = f"{os.getpid() % 10000:04d}"
    subnet = 10 + os.getpid() % 200
    bridge = f"tlbr{tag}"
    made: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"10.231.{subnet}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        out = []
        for party in range(parties):
            namespace, outside = f"tly{tag}p{party}", f"tlv{tag}p{party}"
            public = f"10.231.{subnet}.{party + 1}"
            _ip("netns", "add", namespace)
            made.append(namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _ip("link", "set", outside, "master", bridge, "up")
            inside = ["netns", "exec", namespace, "ip"]
            _ip(*inside, "addr", "add", f"{public}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "addr", "add", f"{POD_ADDRESS}/32", "dev", "lo")
            out.append((namespace, public))
        yield out
    finally:
        for namespace in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "delete", namespace)  # removes its end of the veth pair too
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "delete", bridge)
