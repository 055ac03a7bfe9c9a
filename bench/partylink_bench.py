"""PartyLink vs SocketTransport: a 10^6-row Beaver product, ten 100 MB broadcasts and the
latency of a small broadcast round, 3 processes.

python bench/partylink_bench.py socket | link [tls] [gateway]

``socket`` is the bare engine's plaintext ``SocketTransport``; ``link`` is PartyLink
(``tls``: with the consortium's certificates; ``gateway``: every connection enters
the accepting party through its public endpoint, :mod:`tally.execution.gateway`,
as deployed).  ``cpu_seconds_per_gb``: each party's CPU time (every thread of the
process: the engine's, the link's reader and writer threads, the gateway's) during
the broadcasts, per GB it sent (it received as much).  On 2 cores shared by 3
parties a bandwidth-bound job pays this for every byte.
"""

import json
import multiprocessing as mp
import sys
import time

import numpy as np

from tally._generated import partylink_pb2 as pb
from tally.execution.gateway import Gateway
from tally.execution.partylink import LinkIdentity, PartyLinkEndpoint
from tally.execution.tls import PartyTLS, write_test_pki
from tally.mpc.arithmetic import multiply
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.transport import SocketTransport
from tally.mpc.tuples import Dealer

ROUNDS = 200
"""Small broadcasts timed for the per-round latency."""
BULK_ROUNDS = 10
"""100 MB broadcasts timed for throughput and CPU per byte."""


def worker(i, n, addrs, tlsdir, use_tls, mode, rows, pipe, via_gateway=False):
    if mode == "link":
        tls = PartyTLS.load(*[tlsdir[i][k] for k in range(3)]) if use_tls else None

        async def locate(peer):
            return addrs.get(f"gw{peer}" if via_gateway else peer)

        ep = PartyLinkEndpoint(LinkIdentity("job1", 0, i, n), tls, locate)
        own = ep.start()
        if via_gateway:
            host, port = own.rsplit(":", 1)
            gateway = Gateway(("127.0.0.1", 0), lambda name: (host, int(port)))
            gateway.start()
            addrs[f"gw{i}"] = f"127.0.0.1:{gateway.port}"
        addrs[i] = own
        tr, hellos = ep.connect(pb.Hello(spec_hash="x"), 30)
    else:
        tr = SocketTransport(i, addrs)
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, rows)
    y = rng.integers(-(2**40), 2**40, rows)
    xs = split(encode_int(x), n, np.random.default_rng(2))[i]
    ys = split(encode_int(y), n, np.random.default_rng(3))[i]
    d = Dealer(n, seed=5, only_party=i)
    d.prefetch([("triples", (rows,))] * 3)
    party = Party(i, tr, d.source(i))
    tr.broadcast([np.zeros(1, np.uint64)])
    t0 = time.perf_counter()
    z = multiply(party, [(xs, ys)])[0]
    t1 = time.perf_counter()
    # bulk: 100MB each
    big = np.zeros(12_500_000, np.uint64)
    sent_before = tr.bytes_sent
    cpu = time.process_time()
    t2 = time.perf_counter()
    for _ in range(BULK_ROUNDS):
        tr.broadcast([big])
    t3 = time.perf_counter()
    cpu_per_gb = (time.process_time() - cpu) / ((tr.bytes_sent - sent_before) / 1e9)
    small = np.zeros(1, np.uint64)
    t4 = time.perf_counter()
    for _ in range(ROUNDS):
        tr.broadcast([small])
    t5 = time.perf_counter()
    pipe.send((t1 - t0, (t3 - t2) / BULK_ROUNDS, tr.bytes_sent, z, (t5 - t4) / ROUNDS, cpu_per_gb))
    tr.broadcast([np.zeros(1, np.uint64)])
    if mode == "link":
        tr.close()
        ep.close()
    else:
        tr.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    use_tls = "tls" in sys.argv[2:]
    via_gateway = "gateway" in sys.argv[2:]
    n, rows = 3, 1_000_000
    ctx = mp.get_context("fork")
    import tempfile

    tlsdir = write_test_pki(tempfile.mkdtemp(prefix="partylink-pki-"), n)
    if mode == "link":
        addrs = mp.Manager().dict()
    else:
        import socket

        ports = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
            s.close()
        addrs = [("127.0.0.1", p) for p in ports]
    pipes, procs = [], []
    for i in range(n):
        a, b = ctx.Pipe(False)
        p = ctx.Process(
            target=worker, args=(i, n, addrs, tlsdir, use_tls, mode, rows, b, via_gateway)
        )
        p.start()
        pipes.append(a)
        procs.append(p)
    res = [p.recv() for p in pipes]
    for p in procs:
        p.join()
    z = decode_int(reconstruct([r[3] for r in res]))
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, rows)
    y = rng.integers(-(2**40), 2**40, rows)
    print(
        json.dumps(
            {
                "mode": mode,
                "tls": use_tls,
                "gateway": via_gateway,
                "mul_seconds": max(r[0] for r in res),
                "bulk100MB_seconds": max(r[1] for r in res),
                "bytes": res[0][2],
                "round_latency_ms": round(1000 * max(r[4] for r in res), 3),
                "cpu_seconds_per_gb": [round(r[5], 3) for r in res],
                "correct": bool((z == x * y).all()),
            }
        )
    )
