"""The whole online engine on hm3 tuples: products, comparisons, shuffles and a group-by.

Every protocol runs unchanged with an :class:`Hm3Source` in place of the
dealer, for three parties as threads (InProcessHub) and as three OS processes
over loopback TCP (SocketTransport); results are checked against numpy/pandas.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from tally.mpc.arithmetic import multiply, open_values
from tally.mpc.compare import equal, less_than_zero
from tally.mpc.offline import Hm3Source
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.shuffle import shuffle_columns
from tally.mpc.simulate import run_transports
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set
from tally.mpc.transport import InProcessHub, SocketTransport, Transport

TIMEOUT = 120.0
ROWS = 200
SPECS = {"region": ColumnSpec("key", bits=3), "views": ColumnSpec("int")}


def make_inputs(seed: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**40), 2**40, ROWS)
    y = rng.integers(-(2**20), 2**20, ROWS)
    y[:20] = x[:20]  # some equal pairs
    frame = pd.DataFrame({"region": rng.integers(0, 6, 60), "views": rng.integers(-50, 100, 60)})
    return {"x": x, "y": y, "frame": frame}


def share_inputs(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    xs = split(encode_int(inputs["x"]), 3, rng)
    ys = split(encode_int(inputs["y"]), 3, rng)
    table = np.stack([inputs["x"], np.arange(ROWS)], axis=1)
    columns = split(encode_int(table), 3, rng)
    frame = inputs["frame"]
    tables = share_table({c: frame[c].to_numpy() for c in SPECS}, SPECS, 3, rng=rng)
    return [{"x": xs[p], "y": ys[p], "columns": columns[p], "table": tables[p]} for p in range(3)]


def engine_program(party: Party, shares: dict[str, Any]) -> dict[str, Any]:
    """Every protocol family once; returns this party's shares (and the opened group-by)."""
    (product,) = multiply(party, [(shares["x"], shares["y"])])
    negative = less_than_zero(party, shares["x"])
    same = equal(party, shares["x"], shares["y"])
    shuffled = shuffle_columns(party, shares["columns"])
    (opened_shuffle,) = open_values(party, [shuffled])
    table = table_from_share_set(party, shares["table"], SPECS)
    grouped = table.group_by("region").agg(total=("views", "sum"), n=("views", "count")).reveal()
    return {
        "product": product,
        "negative": negative,
        "equal": same,
        "shuffled": opened_shuffle,
        "grouped": grouped,
    }


def check(results: list[dict[str, Any]], inputs: dict[str, Any]) -> None:
    x, y = inputs["x"], inputs["y"]
    product = decode_int(reconstruct([r["product"] for r in results]))
    np.testing.assert_array_equal(product, x * y)
    negative = reconstruct([r["negative"] for r in results])
    np.testing.assert_array_equal(negative, (x < 0).astype(np.uint64))
    same = reconstruct([r["equal"] for r in results])
    np.testing.assert_array_equal(same, (x == y).astype(np.uint64))
    shuffled = decode_int(results[0]["shuffled"])
    order = shuffled[:, 1]
    assert sorted(order.tolist()) == list(range(ROWS))
    assert order.tolist() != list(range(ROWS))
    np.testing.assert_array_equal(shuffled[:, 0], x[order])
    frame = inputs["frame"]
    expected = frame.groupby("region").agg(total=("views", "sum"), n=("views", "count"))
    grouped = results[0]["grouped"]
    np.testing.assert_array_equal(grouped["region"], expected.index.to_numpy())
    np.testing.assert_array_equal(grouped["total"], expected["total"].to_numpy())
    np.testing.assert_array_equal(grouped["n"], expected["n"].to_numpy())


def run_threads(program: Callable[[Transport], Any]) -> list[Any]:
    return run_transports(3, program, TIMEOUT)


def test_engine_on_hm3_tuples_in_threads_sharing_one_transport() -> None:
    inputs = make_inputs()
    shares = share_inputs(inputs)

    def program(transport: Transport) -> dict[str, Any]:
        party = Party(transport.party, transport, Hm3Source(transport))
        return engine_program(party, shares[transport.party])

    check(run_threads(program), inputs)


def test_engine_on_hm3_tuples_with_a_separate_offline_transport() -> None:
    inputs = make_inputs(seed=9)
    shares = share_inputs(inputs)
    offline_hub = InProcessHub(3, timeout=TIMEOUT)

    def program(transport: Transport) -> dict[str, Any]:
        offline = offline_hub.transport(transport.party)
        party = Party(transport.party, transport, Hm3Source(offline))
        result = engine_program(party, shares[transport.party])
        result["offline_bytes"] = offline.bytes_sent
        return result

    results = run_threads(program)
    check(results, inputs)
    assert all(r["offline_bytes"] > 0 for r in results)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def party_process(
    index: int, addresses: list[tuple[str, int]], shares: dict[str, Any], pipe: Any
) -> None:
    try:
        transport = SocketTransport(index, addresses, connect_timeout=30.0, io_timeout=TIMEOUT)
        try:
            party = Party(index, transport, Hm3Source(transport))
            pipe.send(engine_program(party, shares))
        finally:
            transport.close()
    except BaseException as error:  # reported to the test
        pipe.send(error)


def test_engine_on_hm3_tuples_as_three_processes_over_tcp() -> None:
    inputs = make_inputs(seed=13)
    shares = share_inputs(inputs)
    addresses = [("127.0.0.1", port) for port in free_ports(3)]
    context = mp.get_context("fork")
    pipes, processes = [], []
    for index in range(3):
        parent, child = context.Pipe(duplex=False)
        process = context.Process(
            target=party_process, args=(index, addresses, shares[index], child)
        )
        process.start()
        pipes.append(parent)
        processes.append(process)
    results = []
    for pipe in pipes:
        assert pipe.poll(TIMEOUT), "a party process sent nothing"
        results.append(pipe.recv())
    for process in processes:
        process.join(TIMEOUT)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    check(results, inputs)
