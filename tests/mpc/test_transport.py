"""Tests for tally.mpc.transport: in-process and TCP transports, counters, a protocol over TCP.

The socket tests start one OS process per party (multiprocessing, "spawn") on loopback
ports found by binding port 0; each process reports what it received through a queue.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tally.mpc.arithmetic import multiply
from tally.mpc.compare import less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.transport import InProcessHub, SocketTransport, Transport, TransportError
from tally.mpc.tuples import Dealer

PARTIES = 3
PROCESS_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    """Ports the OS just handed out for port 0 (all bound at once, so distinct)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def loopback_addresses(count: int) -> list[tuple[str, int]]:
    return [("127.0.0.1", port) for port in free_ports(count)]


def message_from(sender: int, receiver: int) -> list[np.ndarray]:
    """What ``sender`` sends ``receiver``: several dtypes and shapes, empty arrays included."""
    tag = 10 * sender + receiver
    return [
        np.arange(5, dtype=np.uint64) + np.uint64(2**63 + tag),
        np.zeros(0, dtype=np.uint64),
        np.full((2, 3), tag, dtype=np.int32) - 2**30,
        np.linspace(-1.5, tag, 7, dtype=np.float64).reshape(7, 1),
        np.array([True, False, tag % 2 == 0]),
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4) + tag,
        np.zeros((4, 0), dtype=np.float32),
        np.array(tag * 0.25, dtype=np.float64),  # 0-d
        np.array([tag - 1j, 2.5 + tag * 1j], dtype=np.complex128),
        np.arange(-3, 3, dtype=np.int16)[::2],  # not contiguous
    ]


def assert_same_arrays(received: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(received) == len(expected)
    for got, want in zip(received, expected, strict=True):
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def payload_bytes(arrays: list[np.ndarray]) -> int:
    return sum(int(array.nbytes) for array in arrays)


def exchange_rounds(transport: Transport) -> dict[str, Any]:
    """Round 1: a different message to each peer.  Round 2: a broadcast.  Round 3: a ring."""
    first = transport.exchange(
        {peer: message_from(transport.party, peer) for peer in transport.peers}, transport.peers
    )
    second = transport.broadcast(message_from(transport.party, transport.party))
    after = (transport.party + 1) % transport.parties
    before = (transport.party - 1) % transport.parties
    third = transport.exchange({after: [np.array([transport.party], np.int64)]}, [before])
    return {
        "first": first,
        "second": second,
        "third": third,
        "rounds": transport.rounds,
        "bytes_sent": transport.bytes_sent,
    }


def check_exchange_rounds(party: int, parties: int, result: dict[str, Any]) -> None:
    peers = [p for p in range(parties) if p != party]
    assert sorted(result["first"]) == peers
    for peer in peers:
        assert_same_arrays(result["first"][peer], message_from(peer, party))
        assert_same_arrays(result["second"][peer], message_from(peer, peer))
    before = (party - 1) % parties
    assert list(result["third"]) == [before]
    assert_same_arrays(result["third"][before], [np.array([before], np.int64)])
    assert result["rounds"] == 3
    expected_bytes = sum(payload_bytes(message_from(party, peer)) for peer in peers)
    expected_bytes += len(peers) * payload_bytes(message_from(party, party)) + 8
    assert result["bytes_sent"] == expected_bytes


# -- worker processes (module level so that "spawn" can import them) -----------------------


def exchange_worker(party: int, addresses: list[tuple[str, int]], results: Any) -> None:
    try:
        transport = SocketTransport(party, addresses, connect_timeout=PROCESS_TIMEOUT)
        try:
            results.put((party, exchange_rounds(transport)))
        finally:
            transport.close()
    except BaseException as error:  # reported to the test process
        results.put((party, error))


MULTIPLY_SEED = 777
MULTIPLY_ROWS = 1000


def multiply_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The same inputs in every process (from a fixed seed), with edge values."""
    rng = np.random.default_rng(5)
    largest = 2**62 - 1
    edges = [0, 1, -1, largest, -largest]
    left = np.concatenate([edges, rng.integers(-largest, largest, size=MULTIPLY_ROWS - 5)])
    right = np.concatenate([edges[::-1], rng.integers(-largest, largest, size=MULTIPLY_ROWS - 5)])
    return left.astype(np.int64), right.astype(np.int64)


def multiply_worker(party: int, addresses: list[tuple[str, int]], results: Any) -> None:
    try:
        left, right = multiply_inputs()
        shared_left = split(encode_int(left), PARTIES, np.random.default_rng(1))[party]
        shared_right = split(encode_int(right), PARTIES, np.random.default_rng(2))[party]
        transport = SocketTransport(party, addresses, connect_timeout=PROCESS_TIMEOUT)
        tuples = Dealer(PARTIES, seed=MULTIPLY_SEED, only_party=party).source(party)
        me = Party(party, transport, tuples)
        try:
            (product,) = multiply(me, [(shared_left, shared_right)])
            after_multiply = (transport.rounds, transport.bytes_sent)
            signs = less_than_zero(me, product)
            results.put((party, (product, signs, after_multiply, transport.rounds)))
        finally:
            transport.close()
    except BaseException as error:  # reported to the test process
        results.put((party, error))


def run_processes(worker: Callable[..., None]) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    addresses = loopback_addresses(PARTIES)
    processes = [
        context.Process(target=worker, args=(party, addresses, results), daemon=True)
        for party in range(PARTIES)
    ]
    for process in processes:
        process.start()
    try:
        collected = dict(results.get(timeout=PROCESS_TIMEOUT) for _ in range(PARTIES))
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    for party, outcome in collected.items():
        if isinstance(outcome, BaseException):
            raise AssertionError(f"party {party} failed") from outcome
    return [collected[party] for party in range(PARTIES)]


# -- socket transport between processes ---------------------------------------------------


def test_socket_transport_between_processes() -> None:
    for party, result in enumerate(run_processes(exchange_worker)):
        check_exchange_rounds(party, PARTIES, result)


def test_multiply_over_sockets_matches_numpy() -> None:
    results = run_processes(multiply_worker)
    left, right = multiply_inputs()
    product = reconstruct([result[0] for result in results])
    np.testing.assert_array_equal(decode_int(product), left * right)
    signs = reconstruct([result[1] for result in results])
    np.testing.assert_array_equal(signs, (left * right < 0).astype(np.uint64))
    for _, _, (rounds, sent), total_rounds in results:
        assert rounds == 1
        assert sent == 16 * MULTIPLY_ROWS * (PARTIES - 1)
        assert total_rounds == 1 + 8


# -- the same checks in one process ------------------------------------------------------


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(index)`` in ``count`` threads at once; re-raises the first failure."""
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as error:  # reported below
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PROCESS_TIMEOUT)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_in_process_transport_exchanges_and_counts(parties: int) -> None:
    transports = InProcessHub(parties).transports()
    results = run_threads(parties, lambda party: exchange_rounds(transports[party]))
    for party, result in enumerate(results):
        check_exchange_rounds(party, parties, result)


def test_socket_transport_keeps_dtype_and_byte_order() -> None:
    """Arrays arrive as the in-process transport delivers them: dtype, byte order and values.

    The header carries only ``dtype.char``, so a big-endian array arrives byte-swapped and
    a string array arrives with the wrong item size (and the stream loses its framing).
    """
    sent = [
        np.arange(4, dtype=">u4"),
        np.array([b"abc", b"d"], dtype="S3"),
        np.array(["xyz", "w"], dtype="<U3"),
    ]
    addresses = loopback_addresses(2)

    def broadcast(party: int) -> Any:
        transport = SocketTransport(party, addresses, connect_timeout=10, io_timeout=10)
        try:
            return transport.broadcast(sent)
        finally:
            transport.close()

    for party, received in enumerate(run_threads(2, broadcast)):
        arrived = received[1 - party]
        assert len(arrived) == len(sent)
        for got, want in zip(arrived, sent, strict=True):
            np.testing.assert_array_equal(got, want)  # values first: byte order may differ
            assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("=")


def test_transport_argument_checks() -> None:
    hub = InProcessHub(3)
    with pytest.raises(ValueError):
        hub.transport(3)
    transport = hub.transport(1)
    assert transport.peers == [0, 2]
    for peer in (1, 3, -1):
        with pytest.raises(ValueError, match="cannot send"):
            transport.exchange({peer: [np.zeros(1)]}, [])
    assert transport.rounds == 0 and transport.bytes_sent == 0


def test_in_process_transport_times_out_when_a_peer_is_silent() -> None:
    transport = InProcessHub(2, timeout=0.05).transport(0)
    with pytest.raises(TransportError, match="sent nothing"):
        transport.exchange({}, [1])


def test_socket_transport_reports_an_unreachable_peer() -> None:
    addresses = loopback_addresses(2)
    with pytest.raises(TransportError, match="unreachable"):
        SocketTransport(1, addresses, connect_timeout=0.3)
