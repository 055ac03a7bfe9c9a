"""The ``ot`` generator: tuples from oblivious transfer, any n >= 2, no dealer (DESIGN §4).

Semi-honest security against any coalition of n - 1 parties (dishonest
majority).  Every ordered pair of parties (R, S) runs one IKNP correlated-OT
extension in which R chooses and S holds the global correlation Delta.

Protocols and what each message reveals (per ordered pair, after setup):

* **Base OTs** (Chou–Orlandi "simplest OT", once per pair per run, 2 rounds):
  128 OTs in a prime-order group (:class:`BaseOtGroup`): edwards25519's order-l
  subgroup through libsodium (``tally.tuples.ot_group``; X25519's curve, with the
  point addition B = g^b A^c that Chou–Orlandi needs and ``cryptography``'s X25519
  lacks), or the 2048-bit MODP group of RFC 3526 with Python's ``pow`` where the
  engine runs alone.  The sender's A and the receiver's B_i are uniform group
  elements: B_i hides the choice bit perfectly; every received element is checked
  to be in the group.  Cost per pair and direction: 32 + 128 * 32 bytes
  (edwards25519; MODP 256 + 128 * 256).
* **IKNP extension** (1 round): R sends u_j = G(k_j0) ^ G(k_j1) ^ r for
  each of the 128 columns, m bits each.  Each u_j is G(k_j1) (a PRG output
  under a key S does not hold) XOR known bits, so S sees uniform bits.
* **Correlation-robust hash**: H(i, x) = pi(pi(x) ^ i) ^ pi(x) with pi a
  fixed-key AES permutation (tweakable CR hash of Guo et al.), on whole
  batches (the tuple-service plugs in AES-ECB; see :class:`BlockHash`).
* **Gilboa OLE** (1 more round): for x (R, w bits) and y (S), S sends
  d_k = H(q_k ^ Delta) - H(q_k) - y mod 2^(64-k); R computes
  v_k = H(t_k) - x_k d_k, so sum 2^k v_k - sum 2^k H(q_k) = x y.  Each d_k is
  masked by H(q_k ^ Delta) (R knows only one of H(q_k), H(q_k ^ Delta)), so
  it is uniform to R.  Packed by width: 8 bytes for k < 32, 4 for k < 48,
  2 for k < 56, 1 for the rest: 344 bytes per 64-bit product.

Tuples (bytes sent per tuple per party, 2 parties; multiply by n - 1):

* ``triples``: a_i, b_i local random; every cross term a_i b_j by Gilboa
  (64 OTs).  16 * 64 (u) + 344 (d) = **1368 bytes**, 2 rounds.
* ``bit_triples``: a_i, b_i random words; each cross term a_i b_j by one OT per
  bit, S sends d = H(q) ^ H(q ^ Delta) ^ b_j (1 bit): 129 bits per AND gate,
  **1032 bytes** per word of 64 gates, 2 rounds.
* ``dabits``: each party a random bit r_i; r = XOR r_i folded in arithmetic
  as acc + r_j - 2 acc r_j with acc r_j by Gilboa with a 1-bit x (1 OT and a
  64-bit correction per earlier party): **24 bytes** per daBit, 2(n - 1) rounds.
* ``edabits(k)``: k daBits b_l with r = sum 2^l b_l (so r < 2^k and its bits are
  the daBits' XOR shares): **24 k bytes**, 2(n - 1) rounds.
* ``input_masks``: a local random word, 0 bytes.
* ``shuffle(rows, kinds)``: for every permuter j and helper i, an oblivious switching
  network (Mohassel–Sadeghian) on a Beneš network of N = 2^ceil(log2 rows) wires
  (2 log2 N - 1 layers of N/2 switches, :mod:`tally.mpc.offline.benes`).  j draws a
  uniform permutation pi_j (argsort of PRF words; fixed points on the padding) and
  routes it; i holds a random mask r_l per wire of every layer (r_0 = its shuffle
  mask a_i).  One random OT per switch, j choosing with the switch's bit c: the
  helper's pads H(q), H(q ^ Delta) (full 128-bit hashes, one per column) give
  M_0 = pad_0 itself — i sets the next layer's masks from it (derandomised OT) — and
  it sends E_1 = M_1 ^ pad_1, where M_c[o] = r_(l-1)[wire routed to output o] -
  r_l[output o].  j keeps d_l = d_(l-1)[routed] + M_c, so d_L = r_0[pi] - r_L:
  Delta_j = pi(sum a_i) + sum b_i with b_i = -r_L (XOR for 'x' columns).  What j
  receives is masked by r_l it never sees, or by the pad of the switch setting it
  did not choose; i receives only IKNP columns.  Cost per switch: 16 bytes (u) +
  16 w (E_1, w columns): about log2 N (16 + 16 w) bytes per row per helper and
  permuter pair; every party permutes at once, 2 rounds per batch of layers.
  Routing is O(N log^2 N) numpy work (0.16 s for 2^17 rows).

Every party's output share is a fresh uniform value apart from the sum; all
a party receives is u columns and corrections, each uniform as argued above.
"""

from __future__ import annotations

import ctypes
import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import cast

import numpy as np
from numpy.typing import NDArray

from tally.mpc import bits
from tally.mpc.offline import benes
from tally.mpc.offline.prf import Prf, fresh_key
from tally.mpc.transport import Transport, TransportError
from tally.mpc.tuples import HelperShare, PermuterShare, ShuffleShare, TupleSource

KAPPA = 128
"""Base OTs per ordered pair, and bits of Delta."""
BATCH_OTS = 1 << 19
"""OTs per extension round: bounds memory (128 bytes per OT in the transpose) and message size."""

Words = NDArray[np.uint64]
Bytes = NDArray[np.uint8]

_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
"""RFC 3526 group 14: a safe prime; g = 2 generates the subgroup of prime order (p - 1) / 2."""
_G = 2
_ELEMENT_BYTES = 256
_EXPONENT_BITS = 256

_WIDTH_CLASSES = ((0, 32, np.uint64), (32, 48, np.uint32), (48, 56, np.uint16), (56, 64, np.uint8))
"""Gilboa correction bit positions k and the dtype that holds their 64 - k bits."""


def keep_freed_buffers() -> bool:
    """Ask glibc to keep freed buffers of up to 32 MB in the heap instead of unmapping them.

    Every extension batch allocates and frees arrays of a few MB; by default
    glibc maps each afresh and the kernel zero-fills every page on first
    touch, which cost a third of the generation time here (measured: 82,000
    against 123,000 triples/s, 2 parties).  Process-wide; called by the
    processes that run :class:`OtGenerator` (the tuple-service, the bench).
    Returns False where the C library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim, top_pad, mmap_threshold = -1, -2, -3  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
    return bool(
        mallopt(mmap_threshold, 32 << 20) and mallopt(trim, 1 << 30) and mallopt(top_pad, 64 << 20)
    )


class OtError(TransportError):
    """A peer's OT message is malformed (wrong count, shape or type) or out of range."""


class BlockHash(ABC):
    """The tweakable correlation-robust hash on 128-bit blocks, batched."""

    @abstractmethod
    def permute(self, blocks: Bytes) -> Bytes:
        """The fixed-key permutation pi on ``(m, 16)`` blocks (AES-ECB under a public key).

        Returns a new array, which :meth:`hash` overwrites.
        """

    def hash(self, blocks: Bytes, tweaks: Words) -> Words:
        """H(i, x) = pi(pi(x) ^ i) ^ pi(x), its low 64 bits, for every row x and tweak i."""
        first = self.permute(blocks)
        low = first.view(np.uint64)[:, 0]
        kept = low.copy()
        low ^= tweaks  # first is pi(x) ^ i now
        out: Words = self.permute(first).view(np.uint64)[:, 0] ^ kept
        return out

    def hash_wide(self, blocks: Bytes, tweaks: Words) -> Words:
        """The same hash with all 128 bits kept: ``(m, 2)`` words per row and tweak."""
        first = self.permute(blocks)
        kept = first.view(np.uint64).copy()
        first.view(np.uint64)[:, 0] ^= tweaks
        out: Words = self.permute(first).view(np.uint64) ^ kept
        return out


def transpose_bits(matrix: Bytes, rows: int) -> Bytes:
    """A ``(KAPPA, m / 8)`` bit matrix (row j = column j of the OTs) -> ``(m, 16)`` rows.

    Bit t of row j (little-endian bit order inside bytes) becomes bit j of OT t.
    The matrix is read as ``uint64`` words: rows 64 a .. 64 a + 63 of word
    column w form a 64x64 bit block, and all blocks of a cache-sized slice of
    columns are transposed at once by six stages of masked swaps between
    rows k and k + s (s = 32, 16, .., 1), each stage a few whole-array
    operations on contiguous runs of words; one copy then interleaves the two
    halves into OT rows.  About 5x faster here than 8x8 blocks with byte
    shuffles, and no loop over OTs.
    """
    kappa, nbytes = matrix.shape
    words = -(-nbytes // 8)
    if nbytes % 8:
        padded = np.zeros((kappa, words * 8), dtype=np.uint8)
        padded[:, :nbytes] = matrix
        matrix = padded
    source = np.ascontiguousarray(matrix).view(np.uint64)
    halves = kappa // 64
    out = np.empty((words, 64, halves), dtype=np.uint64)
    for start in range(0, words, _TRANSPOSE_WORDS):
        stop = min(words, start + _TRANSPOSE_WORDS)
        width = stop - start
        block = source[:, start:stop].reshape(halves, 64, width).copy()
        for shift, mask in _BLOCK_SWAPS:
            split = block.reshape(halves, 32 // shift, 2, shift, width)
            low, high = split[:, :, 0], split[:, :, 1]
            t = low >> shift
            t ^= high
            t &= mask
            high ^= t
            t <<= shift
            low ^= t
        out[start:stop] = block.transpose(2, 1, 0)
    result: Bytes = out.view(np.uint8).reshape(words * 64, kappa // 8)
    return result[:rows]


_TRANSPOSE_WORDS = 1024
"""Word columns per slice of the transpose (1 MB of the matrix: stays in cache)."""
_BLOCK_SWAPS = tuple(
    (np.uint64(s), np.uint64(sum(1 << c for c in range(64) if not c & s)))
    for s in (32, 16, 8, 4, 2, 1)
)
"""Stage s of a 64x64 bit-block transpose: bit c + s of row k <-> bit c of row k + s (c & s = 0)."""


def _check(array: object, dtype: type, shape: tuple[int, ...], peer: int, what: str) -> Bytes:
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype):
        raise OtError(f"party {peer} sent a malformed {what}: expected {np.dtype(dtype)} data")
    if array.shape != shape:
        raise OtError(
            f"party {peer} sent a malformed {what}: shape {array.shape}, expected {shape}"
        )
    return cast(Bytes, array)


def _receive(
    received: dict[int, list[NDArray[np.generic]]], peer: int, count: int, what: str
) -> list[NDArray[np.generic]]:
    arrays = received.get(peer)
    if arrays is None or len(arrays) != count:
        got = 0 if arrays is None else len(arrays)
        raise OtError(f"party {peer} sent {got} arrays for the {what}, expected {count}")
    return arrays


def _key(shared: bytes, context: bytes, index: int) -> bytes:
    data = shared + context + index.to_bytes(4, "little")
    return hashlib.blake2b(data, digest_size=16).digest()


class BaseOtGroup(ABC):
    """A prime-order group for the Chou–Orlandi base OTs; elements and scalars as bytes.

    :class:`ModpGroup` (standard library: the engine's default, since ``tally.mpc``
    imports nothing else) or edwards25519's prime-order subgroup from libsodium,
    ``tally.tuples.ot_group.Ed25519Group`` (about 25x faster; the tuple-service, the
    bench and the tests use it).
    """

    element_bytes: int

    @abstractmethod
    def scalar(self) -> bytes:
        """A uniform secret scalar."""

    @abstractmethod
    def base(self, scalar: bytes) -> bytes:
        """g^scalar."""

    @abstractmethod
    def multiply(self, scalar: bytes, element: bytes) -> bytes:
        """element^scalar (``element`` already checked with :meth:`valid`)."""

    @abstractmethod
    def add(self, left: bytes, right: bytes) -> bytes:
        """The group operation."""

    @abstractmethod
    def subtract(self, left: bytes, right: bytes) -> bytes:
        """left times the inverse of right."""

    @abstractmethod
    def valid(self, element: bytes) -> bool:
        """Whether ``element`` is a canonical element of the prime-order group, not the identity."""


class ModpGroup(BaseOtGroup):
    """The prime-order subgroup of RFC 3526 group 14 (2048-bit MODP), 256-bit exponents."""

    element_bytes = _ELEMENT_BYTES

    def scalar(self) -> bytes:
        return (secrets.randbits(_EXPONENT_BITS) | 1).to_bytes(32, "big")

    def _int(self, element: bytes) -> int:
        return int.from_bytes(element, "big")

    def _bytes(self, value: int) -> bytes:
        return value.to_bytes(_ELEMENT_BYTES, "big")

    def base(self, scalar: bytes) -> bytes:
        return self._bytes(pow(_G, self._int(scalar), _P))

    def multiply(self, scalar: bytes, element: bytes) -> bytes:
        return self._bytes(pow(self._int(element), self._int(scalar), _P))

    def add(self, left: bytes, right: bytes) -> bytes:
        return self._bytes(self._int(left) * self._int(right) % _P)

    def subtract(self, left: bytes, right: bytes) -> bytes:
        return self._bytes(self._int(left) * pow(self._int(right), -1, _P) % _P)

    def valid(self, element: bytes) -> bool:
        return len(element) == _ELEMENT_BYTES and 1 < self._int(element) < _P - 1


class PairSetup:
    """This party's base-OT keys with one peer: as extension receiver and as extension sender."""

    def __init__(
        self,
        receiver_keys: list[tuple[bytes, bytes]],
        delta: NDArray[np.bool_],
        sender_keys: list[bytes],
    ) -> None:
        self.receiver_keys = receiver_keys
        """Pairs (k_j0, k_j1): this party chooses in OTs toward the peer."""
        self.delta = delta
        """Delta's 128 bits: this party sends in OTs toward the peer."""
        self.delta_block = np.packbits(delta, bitorder="little")
        self.sender_keys = sender_keys
        """k_{j, delta_j}."""


def base_ots(
    transport: Transport, session: bytes, group: BaseOtGroup | None = None
) -> dict[int, PairSetup]:
    """Chou–Orlandi base OTs with every peer, both directions, in 2 rounds.

    In the base OTs toward peer j this party's role is flipped: as IKNP
    receiver it is the base-OT *sender* of 128 key pairs; as IKNP sender it
    chooses with the bits of its Delta.  The sender's A = g^a; the chooser's
    B_i = g^b_i (choice 0) or A g^b_i (choice 1), both uniform in the group, so B_i
    hides the choice perfectly; keys H(B^a) and H((B / A)^a) against H(A^b).
    """
    group = group or ModpGroup()
    size = group.element_bytes
    me, peers = transport.party, transport.peers
    secrets_a = {p: group.scalar() for p in peers}
    public_a = {p: group.base(secrets_a[p]) for p in peers}
    first = transport.exchange(
        {p: [np.frombuffer(public_a[p], dtype=np.uint8).copy()] for p in peers}, peers
    )
    deltas = {p: np.frombuffer(secrets.token_bytes(KAPPA), dtype=np.uint8) & 1 for p in peers}
    chooser_b: dict[int, list[bytes]] = {}
    their_a: dict[int, bytes] = {}
    outgoing: dict[int, list[NDArray[np.generic]]] = {}
    for p in peers:
        (element,) = _receive(first, p, 1, "base-OT key")
        value = _check(element, np.uint8, (size,), p, "base-OT key").tobytes()
        if not group.valid(value):
            raise OtError(f"party {p} sent a base-OT key outside the group")
        their_a[p] = value
        chooser_b[p] = [group.scalar() for _ in range(KAPPA)]
        rows = []
        for j in range(KAPPA):
            element_b = group.base(chooser_b[p][j])
            if deltas[p][j]:
                element_b = group.add(element_b, value)
            rows.append(np.frombuffer(element_b, dtype=np.uint8))
        outgoing[p] = [np.stack(rows)]
    second = transport.exchange(outgoing, peers)
    out: dict[int, PairSetup] = {}
    for p in peers:
        (received_matrix,) = _receive(second, p, 1, "base-OT choices")
        matrix = _check(received_matrix, np.uint8, (KAPPA, size), p, "base-OT choices")
        # As base-OT sender to p (this party is IKNP receiver toward p).
        context = session + b"/%d>%d" % (me, p)
        a = secrets_a[p]
        own = group.multiply(a, public_a[p])  # A^a
        pairs = []
        for j in range(KAPPA):
            value = matrix[j].tobytes()
            if not group.valid(value):
                raise OtError(f"party {p} sent a base-OT choice outside the group")
            shared = group.multiply(a, value)
            pairs.append((_key(shared, context, j), _key(group.subtract(shared, own), context, j)))
        # As base-OT chooser from p (this party is IKNP sender toward p).
        their_context = session + b"/%d>%d" % (p, me)
        chosen = [
            _key(group.multiply(chooser_b[p][j], their_a[p]), their_context, j)
            for j in range(KAPPA)
        ]
        out[p] = PairSetup(pairs, deltas[p].astype(bool), chosen)
    return out


class OtGenerator:
    """This party's end of the ``ot`` protocols over ``transport``; labels must never repeat."""

    def __init__(
        self,
        transport: Transport,
        prf: Prf,
        block_hash: BlockHash,
        session: bytes = b"ot",
        setup: dict[int, PairSetup] | None = None,
        group: BaseOtGroup | None = None,
    ) -> None:
        self.transport = transport
        self.party = transport.party
        self.prf = prf
        self.hash = block_hash
        self.setup = setup if setup is not None else base_ots(transport, session, group)
        self._private = fresh_key()
        self._counter = 0

    # -- local randomness -------------------------------------------------------------
    def _words(self, label: bytes, count: int) -> Words:
        return self.prf.words(self._private, label, count)

    def _tweaks(self, count: int) -> Words:
        start = self._counter
        self._counter += count
        return np.arange(start, start + count, dtype=np.uint64)

    # -- IKNP ---------------------------------------------------------------------------
    def _extend(
        self, label: bytes, choices: dict[int, Bytes], senders: Sequence[int], m: int
    ) -> tuple[dict[int, Bytes], dict[int, Bytes]]:
        """Correlated OTs: ``choices[peer]`` packed choice bits (m bits) toward each sender peer.

        Returns t rows ``(m, 16)`` per sender peer (this party chose) and q rows
        per receiver peer in ``senders`` (q = t ^ r Delta at the peer).  1 round.
        """
        me, nbytes = self.party, (m + 7) // 8
        outgoing: dict[int, list[NDArray[np.generic]]] = {}
        t_rows: dict[int, Bytes] = {}
        for peer, packed in choices.items():
            keys = self.setup[peer].receiver_keys
            tag = label + b"/%d>%d" % (me, peer)
            t = np.empty((KAPPA, nbytes), dtype=np.uint8)
            u = np.empty((KAPPA, nbytes), dtype=np.uint8)
            for j, (k0, k1) in enumerate(keys):
                t[j] = self._stream(k0, tag, nbytes)
                u[j] = t[j] ^ self._stream(k1, tag, nbytes) ^ packed
            t_rows[peer] = transpose_bits(t, m)
            outgoing[peer] = [u]
        received = self.transport.exchange(outgoing, list(senders))
        q_rows: dict[int, Bytes] = {}
        for peer in senders:
            (u_received,) = _receive(received, peer, 1, "OT extension matrix")
            u = _check(u_received, np.uint8, (KAPPA, nbytes), peer, "OT extension matrix")
            setup = self.setup[peer]
            tag = label + b"/%d>%d" % (peer, me)
            q = np.empty((KAPPA, nbytes), dtype=np.uint8)
            for j, key in enumerate(setup.sender_keys):
                q[j] = self._stream(key, tag, nbytes)
                if setup.delta[j]:
                    q[j] ^= u[j]
            q_rows[peer] = transpose_bits(q, m)
        return t_rows, q_rows

    def _stream(self, key: bytes, label: bytes, nbytes: int) -> Bytes:
        words = self.prf.words(key, label, (nbytes + 7) // 8)
        return words.view(np.uint8)[:nbytes]

    # -- Gilboa ------------------------------------------------------------------------
    def cross(
        self, label: bytes, x: Words, y: Words, width: int, pairs: Sequence[tuple[int, int]]
    ) -> Words:
        """Additive shares of sum over (R, S) in ``pairs`` of x_R * y_S (x has ``width`` bits).

        This party's x and y are its inputs in every pair it is part of.  2 rounds
        per batch of at most ``BATCH_OTS`` OTs.
        """
        step = max(1, BATCH_OTS // width)
        if len(x) > step:
            parts = [
                self.cross(label + b"/%d" % i, x[i : i + step], y[i : i + step], width, pairs)
                for i in range(0, len(x), step)
            ]
            return np.concatenate(parts)
        me, count = self.party, len(x)
        m = count * width
        as_receiver = [s for r, s in pairs if r == me]
        as_sender = [r for r, s in pairs if s == me]
        plane = (x[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)
        choice_bits = plane.astype(np.uint8).reshape(-1)
        packed = np.packbits(choice_bits, bitorder="little")
        tweaks = self._tweaks(m)  # same counter at both ends: pairs run in the same order
        t_rows, q_rows = self._extend(label, {s: packed for s in as_receiver}, as_sender, m)
        shift = np.arange(width, dtype=np.uint64)
        share = np.zeros(count, dtype=np.uint64)
        outgoing: dict[int, list[NDArray[np.generic]]] = {}
        for peer in as_sender:
            q = q_rows[peer]
            h0 = self.hash.hash(q, tweaks).reshape(count, width)
            h1 = self.hash.hash(q ^ self.setup[peer].delta_block, tweaks).reshape(count, width)
            d = h1 - h0 - y[:, None]
            share -= (h0 << shift).sum(axis=1, dtype=np.uint64)
            outgoing[peer] = _pack_corrections(d, width)
        received = self.transport.exchange(outgoing, as_receiver)
        for peer in as_receiver:
            arrays = _receive(received, peer, len(_classes(width)), "OLE corrections")
            d = _unpack_corrections(arrays, count, width, peer)
            h = self.hash.hash(t_rows[peer], tweaks).reshape(count, width)
            v = h - plane * d
            share += (v << shift).sum(axis=1, dtype=np.uint64)
        return share

    def _all_pairs(self) -> list[tuple[int, int]]:
        n = self.transport.parties
        return [(r, s) for r in range(n) for s in range(n) if r != s]

    # -- tuples ------------------------------------------------------------------------
    def triples(self, label: bytes, count: int) -> tuple[Words, Words, Words]:
        """Beaver triples over Z_2^64: additive shares of a, b, c = a b."""
        a = self._words(label + b"/a", count)
        b = self._words(label + b"/b", count)
        c = a * b + self.cross(label + b"/ab", a, b, 64, self._all_pairs())
        return a, b, c

    def bit_triples(self, label: bytes, words: int) -> tuple[Words, Words, Words]:
        """Packed AND triples: XOR shares of a, b, c = a & b (64 gates per word)."""
        step = BATCH_OTS // 64
        if words > step:
            parts = [
                self.bit_triples(label + b"/%d" % i, min(step, words - i))
                for i in range(0, words, step)
            ]
            a, b, c = (np.concatenate([p[k] for p in parts]) for k in range(3))
            return a, b, c
        me, m = self.party, words * 64
        a = self._words(label + b"/a", words)
        b = self._words(label + b"/b", words)
        pairs = self._all_pairs()
        receivers = [s for r, s in pairs if r == me]
        senders = [r for r, s in pairs if s == me]
        a_bits = np.unpackbits(a.view(np.uint8), bitorder="little")
        tweaks = self._tweaks(m)
        t_rows, q_rows = self._extend(
            label + b"/ot",
            {s: np.packbits(a_bits, bitorder="little") for s in receivers},
            senders,
            m,
        )
        c = a & b
        b_bits = np.unpackbits(b.view(np.uint8), bitorder="little")
        outgoing: dict[int, list[NDArray[np.generic]]] = {}
        for peer in senders:
            q = q_rows[peer]
            h0 = (self.hash.hash(q, tweaks) & np.uint64(1)).astype(np.uint8)
            h1 = (self.hash.hash(q ^ self.setup[peer].delta_block, tweaks) & np.uint64(1)).astype(
                np.uint8
            )
            c ^= _pack_bits(h0)
            outgoing[peer] = [np.packbits(h0 ^ h1 ^ b_bits, bitorder="little")]
        received = self.transport.exchange(outgoing, receivers)
        for peer in receivers:
            (d_received,) = _receive(received, peer, 1, "AND corrections")
            d = _check(d_received, np.uint8, (m // 8,), peer, "AND corrections")
            d_bits = np.unpackbits(d, bitorder="little")
            h = (self.hash.hash(t_rows[peer], tweaks) & np.uint64(1)).astype(np.uint8)
            c ^= _pack_bits(h ^ (a_bits & d_bits))
        return a, b, c

    def dabits(self, label: bytes, count: int) -> tuple[Words, Words]:
        """Random bits: arithmetic shares ``(count,)`` and XOR-shared packed words."""
        n, me = self.transport.parties, self.party
        words = bits.word_count(count)
        mine = self._words(label + b"/r", words)
        if count % 64:
            mine &= bits.lane_mask(count)
        own = bits.unpack_lanes(mine, count).astype(np.uint64) if count else np.zeros(0, np.uint64)
        acc = own.copy() if me == 0 else np.zeros(count, dtype=np.uint64)
        for j in range(1, n):
            x = own if me == j else np.zeros(count, dtype=np.uint64)
            pairs = [(j, i) for i in range(j)]
            product = self.cross(label + b"/fold%d" % j, x, acc, 1, pairs) if count else acc * 0
            acc = acc - np.uint64(2) * product
            if me == j:
                acc = acc + own
        return acc, mine

    def edabits(self, label: bytes, count: int, width: int) -> tuple[Words, Words]:
        """Random r < 2^width: arithmetic shares and XOR shares of its bit planes (width daBits)."""
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        arith, packed = self.dabits(label + b"/bits", count * width)
        words = bits.word_count(count)
        lanes = (
            bits.unpack_lanes(packed, count * width).reshape(width, count)
            if count
            else np.zeros((width, 0), np.uint8)
        )
        planes = (
            np.stack([bits.pack_lanes(lanes[level]) for level in range(width)])
            if count
            else np.zeros((width, words), np.uint64)
        )
        weights = np.uint64(1) << np.arange(width, dtype=np.uint64)
        value = (arith.reshape(width, count) * weights[:, None]).sum(axis=0, dtype=np.uint64)
        return value, planes.reshape(width, words)

    def input_masks(self, label: bytes, count: int) -> Words:
        """This party's share of a random mask: local, 0 bytes."""
        return self._words(label + b"/mask", count)

    # -- shuffles ----------------------------------------------------------------------
    def shuffle(self, label: bytes, rows: int, kinds: str) -> ShuffleShare:
        """One shuffle correlation: every party permutes once, the others help (module doc).

        Every party runs, as permuter toward every helper at once, an oblivious switching
        network (a Beneš network, :mod:`tally.mpc.offline.benes`) with one 1-of-2 OT per
        switch whose choice is the switch's bit; as helper it holds a random mask per
        wire and layer.  2 rounds per batch of layers.
        """
        n, me = self.transport.parties, self.party
        width, peers = len(kinds), self.transport.peers
        xor = np.array([kind == "x" for kind in kinds], dtype=bool)
        size = benes.size_for(rows)
        permutation = np.argsort(self._words(label + b"/pi", rows), kind="stable")
        if width == 0:  # nothing to hide: no messages
            empty = np.zeros((rows, 0), dtype=np.uint64)
            return [
                PermuterShare(permutation, empty) if p == me else HelperShare(empty, empty)
                for p in range(n)
            ]
        padded = np.arange(size, dtype=np.int64)
        padded[:rows] = permutation  # fixed points on the padding: it maps rows to rows
        bits = benes.route(padded)
        wiring = benes.wirings(size)
        switches, words = size // 2, 2 * width
        masks = {
            p: self._words(label + b"/a%d" % p, size * width).reshape(size, width) for p in peers
        }
        inputs = dict(masks)  # the first layer's masks: every layer rebinds, none mutates
        delta = np.zeros((size, width), dtype=np.uint64)
        per_batch = max(1, 4 * BATCH_OTS // (switches * width))  # hash blocks per round
        for start in range(0, len(wiring), per_batch):
            layers = range(start, min(start + per_batch, len(wiring)))
            m = switches * len(layers)
            choice = np.concatenate([bits[layer] for layer in layers]).astype(np.uint8)
            packed = np.packbits(choice, bitorder="little")
            tweaks = self._tweaks(m * width)  # one 128-bit hash per OT and column
            t_rows, q_rows = self._extend(
                label + b"/s%d" % start, {p: packed for p in peers}, peers, m
            )
            outgoing: dict[int, list[NDArray[np.generic]]] = {}
            for p in peers:  # as helper of p: the next layer's masks make M0 the pad itself
                q = np.repeat(q_rows[p], width, axis=0)
                pad0 = self.hash.hash_wide(q, tweaks).reshape(len(layers), switches, 2, width)
                q ^= self.setup[p].delta_block
                pad1 = self.hash.hash_wide(q, tweaks).reshape(len(layers), switches, 2, width)
                sent = np.empty_like(pad1)
                for i, layer in enumerate(layers):
                    before = masks[p][wiring[layer]].reshape(switches, 2, width)
                    after = _combine(before, pad0[i], xor, subtract=True)
                    sent[i] = _combine(before[:, ::-1], after, xor, subtract=True) ^ pad1[i]
                    masks[p] = after.reshape(size, width)
                outgoing[p] = [sent.reshape(m, words)]
            received = self.transport.exchange(outgoing, peers)
            total = np.zeros((len(layers), switches, 2, width), dtype=np.uint64)
            chosen = choice.reshape(len(layers), switches).astype(bool)
            for p in peers:  # as permuter: the message of each switch's bit
                (arrays,) = _receive(received, p, 1, "switch corrections")
                corrections = _check(arrays, np.uint64, (m, words), p, "switch corrections")
                pad = self.hash.hash_wide(np.repeat(t_rows[p], width, axis=0), tweaks)
                pads = pad.reshape(m, words)
                message = np.where(chosen.reshape(m)[:, None], corrections ^ pads, pads)
                total = _combine(total, message.reshape(total.shape), xor)
            for i, layer in enumerate(layers):
                before = delta[wiring[layer]].reshape(switches, 2, width)
                routed = np.where(chosen[i][:, None, None], before[:, ::-1], before)
                delta = _combine(routed, total[i], xor).reshape(size, width)
        out: ShuffleShare = []
        for permuter in range(n):
            if permuter == me:
                out.append(PermuterShare(permutation, np.ascontiguousarray(delta[:rows])))
            else:
                final = masks[permuter][:rows]
                output = np.where(xor, final, np.uint64(0) - final)
                out.append(HelperShare(np.ascontiguousarray(inputs[permuter][:rows]), output))
        return out


def _combine(left: Words, right: Words, xor: NDArray[np.bool_], subtract: bool = False) -> Words:
    """left + right (or - right) per column, XOR in the columns where ``xor`` is set."""
    ring = left - right if subtract else left + right
    out: Words = np.where(xor, left ^ right, ring)
    return out


def _pack_bits(values: Bytes) -> Words:
    out: Words = np.packbits(values, bitorder="little").view(np.uint64)
    return out


def _classes(width: int) -> list[tuple[int, int, type]]:
    return [(lo, min(hi, width), dt) for lo, hi, dt in _WIDTH_CLASSES if lo < width]


def _pack_corrections(d: Words, width: int) -> list[NDArray[np.generic]]:
    return [np.ascontiguousarray(d[:, lo:hi]).astype(dt) for lo, hi, dt in _classes(width)]


def _unpack_corrections(
    arrays: list[NDArray[np.generic]], count: int, width: int, peer: int
) -> Words:
    parts = []
    for array, (lo, hi, dt) in zip(arrays, _classes(width), strict=True):
        _check(array, dt, (count, hi - lo), peer, "OLE corrections")
        parts.append(array.astype(np.uint64))
    out: Words = np.concatenate(parts, axis=1)
    return out


class OtSource(TupleSource):
    """One party's on-demand ``ot`` tuples (batch labels ``k/kind``), shuffles included."""

    def __init__(self, generator: OtGenerator) -> None:
        self.party = generator.party
        self.parties = generator.transport.parties
        self.generator = generator
        self._batch = 0

    def _label(self, kind: str) -> bytes:
        self._batch += 1
        return b"%d/%s" % (self._batch, kind.encode())

    def triples(self, count: int) -> tuple[Words, Words, Words]:
        return self.generator.triples(self._label("triples"), count)

    def bit_triples(self, words: int) -> tuple[Words, Words, Words]:
        return self.generator.bit_triples(self._label("bit_triples"), words)

    def dabits(self, count: int) -> tuple[Words, Words]:
        return self.generator.dabits(self._label("dabits"), count)

    def edabits(self, count: int, width: int) -> tuple[Words, Words]:
        return self.generator.edabits(self._label("edabits"), count, width)

    def input_masks(self, count: int) -> Words:
        return self.generator.input_masks(self._label("input_masks"), count)

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        return self.generator.shuffle(self._label("shuffle"), rows, kinds)
