"""Separate networks on one machine: one Linux network namespace per party, optionally shaped.

:func:`party_networks` makes, for ``n`` parties, a bridge in the caller's namespace
(the "internet" between the organizations, with the caller as every client), and per
party a namespace with

* ``eth0``: a veth on that bridge with the party's public address ``10.231.<k>.<i+1>``;
* its own loopback, where the party's services reach each other, which also carries
  :data:`~tally.local_deployment.POD_ADDRESS`, the same in every namespace (as
  overlapping pod networks are), where workers listen.

So a party's workers are reachable from another party only through its public
endpoint: a peer that dialled a worker's own address would reach itself.

:func:`shaped_networks` makes the links between organizations slow and far apart
(a :class:`Shape`: each party's uplink rate and the round-trip time).  Each party's
namespace gets ``tun0`` with its public address instead of a veth; its egress is
rate-limited by a token bucket (``tc qdisc ... tbf rate``), and a delay line (one
process here, reading every party's ``tun0``) hands each packet to the addressed
party's ``tun0`` RTT / 2 after it left the sender.  Packets, ACKs included, so TCP
sees the round-trip time it would see between two sites.  (netem, the usual tool,
is not built into every kernel: this machine's has tbf but not netem.)  A party's
uplink carries everything it sends to all its peers.  Only the parties are on this
network; the caller cannot reach them.

Everything is removed on exit, also when the body raises or is interrupted.  Used
by the separate-networks tests, ``bench/networks_bench.py`` and ``bench/run.py
--net``.  Needs root and the ``ip`` command (iproute2; ``tc`` and ``/dev/net/tun``
for shaping).  A process enters a namespace with ``ip netns exec`` or, after a fork,
:func:`enter`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import multiprocessing as mp
import os
import select
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tally.local_deployment import POD_ADDRESS

CLONE_NEWNET = 0x40000000
"""setns(2)'s namespace type for network namespaces."""
TUN_MTU = 1500
"""MTU of the shaped links, as on the internet (TCP starts with 10 segments of 1448 bytes)."""
_TUNSETIFF, _TUNSETOFFLOAD = 0x400454CA, 0x400454D0
_IFF_TUN, _IFF_NO_PI, _IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
_TUN_F_CSUM, _TUN_F_TSO4 = 0x01, 0x02
_PR_SET_TIMERSLACK = 29
_VNET_HEADER = 10
"""Bytes of ``struct virtio_net_hdr`` before each packet (segmentation offload)."""
_READ_BYTES = _VNET_HEADER + 65536


class NetworkError(RuntimeError):
    """The namespaces or their links could not be made; the message says which command failed."""


@dataclass(frozen=True)
class Shape:
    """A link between organizations: each party's uplink rate and the round-trip time."""

    name: str
    rate_bits: float
    """Bits per second of each party's uplink."""
    rtt_seconds: float
    """Round-trip time between any two parties (half of it each way)."""


SHAPES = {
    "lan": Shape("lan", 10e9, 0.2e-3),
    "wan": Shape("wan", 1e9, 20e-3),
    "slow": Shape("slow", 100e6, 50e-3),
}
"""The named networks of ``bench/run.py --net``."""


def available(shaping: bool = False) -> str | None:
    """Why namespaces (shaped ones with ``shaping``) cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if shaping and shutil.which("tc") is None:
        return "the tc command (iproute2) is not installed"
    if shaping and not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (shaped links are TUN devices)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _run(*command: str) -> None:
    subprocess.run(list(command), check=True, capture_output=True, text=True)


def _ip(*args: str) -> None:
    _run("ip", *args)


@contextlib.contextmanager
def _commands(what: str) -> Iterator[None]:
    """A failing ``ip`` or ``tc`` command (or system call) as a :class:`NetworkError`."""
    try:
        yield
    except subprocess.CalledProcessError as error:
        command = " ".join(error.cmd)
        detail = (error.stderr or "").strip()
        raise NetworkError(f"{what} failed: {command}: {detail}") from None
    except OSError as error:
        raise NetworkError(f"{what} failed: {error}") from None


@contextlib.contextmanager
def _namespaces(parties: int, bridge: str | None = None) -> Iterator[list[tuple[str, str]]]:
    """(namespace, public address) per party, loopback up; removed (and ``bridge``) on exit."""
    tag = f"{os.getpid() % 10000:04d}"
    subnet = 10 + os.getpid() % 200
    made: list[str] = []
    try:
        networks = []
        with _commands("making network namespaces"):
            for party in range(parties):
                namespace = f"tly{tag}p{party}"
                _ip("netns", "add", namespace)
                made.append(namespace)
                _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
                networks.append((namespace, f"10.231.{subnet}.{party + 1}"))
        yield networks
    finally:
        for namespace in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "delete", namespace)  # removes its end of a veth pair too
        if bridge is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "delete", bridge)


@contextlib.contextmanager
def party_networks(parties: int) -> Iterator[list[tuple[str, str]]]:
    """(namespace, public address) per party on one bridge with the caller; removed on exit."""
    tag = f"{os.getpid() % 10000:04d}"
    bridge = f"tlbr{tag}"
    with _namespaces(parties, bridge) as networks:
        subnet = networks[0][1].rsplit(".", 1)[0]
        with _commands("linking the namespaces"):
            _ip("link", "add", bridge, "type", "bridge")
            _ip("addr", "add", f"{subnet}.254/24", "dev", bridge)
            _ip("link", "set", bridge, "up")
            for party, (namespace, public) in enumerate(networks):
                outside = f"tlv{tag}p{party}"
                peer = ["peer", "name", "eth0", "netns", namespace]
                _ip("link", "add", outside, "type", "veth", *peer)
                _ip("link", "set", outside, "master", bridge, "up")
                inside = ["netns", "exec", namespace, "ip"]
                _ip(*inside, "addr", "add", f"{public}/24", "dev", "eth0")
                _ip(*inside, "link", "set", "eth0", "up")
                _ip(*inside, "addr", "add", f"{POD_ADDRESS}/32", "dev", "lo")
        yield networks


@contextlib.contextmanager
def shaped_networks(parties: int, shape: Shape) -> Iterator[list[tuple[str, str]]]:
    """(namespace, public address) per party, linked as ``shape`` says (module docstring)."""
    with _namespaces(parties) as networks:
        descriptors: list[int] = []
        try:
            with _commands("shaping the links"):
                for namespace, public in networks:
                    descriptors.append(_open_tun(namespace))
                    inside = ["ip", "netns", "exec", namespace]
                    _run(*inside, "ip", "addr", "add", f"{public}/24", "dev", "tun0")
                    _run(*inside, "ip", "link", "set", "tun0", "mtu", str(TUN_MTU), "up")
                    _run(*inside, "tc", "qdisc", "add", "dev", "tun0", "root", *_tbf(shape))
            subnet = bytes(int(part) for part in networks[0][1].split(".")[:3])
            line = mp.get_context("fork").Process(
                target=_delay_line,
                args=(descriptors, subnet, shape.rtt_seconds / 2),
                name="tally-delay-line",
                daemon=True,
            )
            line.start()
        finally:
            for descriptor in descriptors:
                os.close(descriptor)  # the delay line holds its own copies: the devices live
        try:
            yield networks
        finally:
            line.kill()
            line.join()


def _tbf(shape: Shape) -> list[str]:
    """A token bucket at the uplink rate: bursts of at most 2 ms of it (or two packets)."""
    burst = max(2 * TUN_MTU + 2048, round(shape.rate_bits / 8 * 2e-3))
    limit = burst + round(shape.rate_bits / 8 * 0.1)  # 100 ms of queue before a drop
    return ["tbf", "rate", f"{round(shape.rate_bits)}bit", "burst", str(burst), "limit", str(limit)]


def _open_tun(namespace: str) -> int:
    """A descriptor of a new ``tun0`` in ``namespace`` (this thread returns to its namespace)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(namespace)
        try:
            descriptor = os.open("/dev/net/tun", os.O_RDWR)
            flags = _IFF_TUN | _IFF_NO_PI | _IFF_VNET_HDR
            fcntl.ioctl(descriptor, _TUNSETIFF, struct.pack("16sH22x", b"tun0", flags))
            fcntl.ioctl(descriptor, _TUNSETOFFLOAD, _TUN_F_CSUM | _TUN_F_TSO4)
            return descriptor
        finally:
            _setns(home)
    finally:
        os.close(home)


def _delay_line(descriptors: list[int], subnet: bytes, delay: float) -> None:
    """Forever: each IPv4 packet read from a party's ``tun0`` goes to the addressed party's
    ``tun0`` ``delay`` seconds later, in order; anything else is dropped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped by the caller, after the parties
    with contextlib.suppress(OSError, AttributeError):  # wake on time, not 50 us late
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1)
    for descriptor in descriptors:
        os.set_blocking(descriptor, False)
    due: collections.deque[tuple[float, int, bytes]] = collections.deque()
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        readable, _, _ = select.select(descriptors, [], [], timeout)
        arrived = time.monotonic()
        for descriptor in readable:
            while True:
                try:
                    packet = os.read(descriptor, _READ_BYTES)
                except BlockingIOError:
                    break
                ip = _VNET_HEADER  # the IPv4 header follows the offload header
                if len(packet) < ip + 20 or packet[ip] >> 4 != 4:
                    continue
                if packet[ip + 16 : ip + 19] != subnet:
                    continue
                target = packet[ip + 19] - 1
                if 0 <= target < len(descriptors):
                    due.append((arrived + delay, descriptors[target], packet))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, target_descriptor, packet = due.popleft()
            with contextlib.suppress(BlockingIOError):
                os.write(target_descriptor, packet)


def enter(namespace: str) -> None:
    """Move this thread (a fresh process: this process) into ``namespace`` with setns(2)."""
    descriptor = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(descriptor)
    finally:
        os.close(descriptor)


def _setns(descriptor: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(descriptor, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(descriptor, CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"setns: {os.strerror(number)}")
