"""Chunk storage: shares in the ``BlobStore``, the index in SQL (SQLite or PostgreSQL).

A chunk row (global id, kind, count, state, reservation) moves through
``generating -> free -> reserved -> consumed``; ``generating`` rows whose
generation was interrupted are discarded, reserved rows of a released
reservation go back to ``free``.  Every state change that hands tuples out
is one SQL transaction guarded by the expected current state, so two
reservations can never both take a chunk, and a range is marked consumed in
the same transaction that serves it.

Blob key of a chunk: ``chunks/<kind>/<id>``; its bytes are the kind's
sections one after another (see :mod:`tally.mpc.offline.layout`).

The tables are created and changed by the Alembic migrations in
``tally/tuples/migrations`` (:func:`migrate`, run at start-up), never by
``create_all``; a test checks that the migrations match these tables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from tally.common.blobstore import BlobNotFound, BlobStore
from tally.common.db import UTCDateTime, make_metadata, upgrade_database
from tally.mpc.offline.layout import Kind, parse_kind

metadata = make_metadata()

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "tuple_alembic_version"
"""Alembic's revision table for this schema (not the default, so a database can be shared)."""


def migrate(database_url: str) -> None:
    """Bring the chunk index at ``database_url`` to the newest schema (Alembic ``upgrade head``)."""
    upgrade_database(database_url, MIGRATIONS)


chunks = Table(
    "tuple_chunks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False, index=True),
    Column("count", Integer, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("reservation_id", String(64), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
)

reservations = Table(
    "tuple_reservations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("job_id", String(200), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("session", String(64), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: {kind: {"count": n, "chunks": [ids]}}
    Column("created_at", UTCDateTime, nullable=False),
)

served = Table(
    "tuple_served",
    metadata,
    Column("reservation_id", String(64), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)


job_tokens = Table(
    "tuple_job_tokens",
    metadata,
    Column("digest", String(64), primary_key=True),  # SHA-256 of the token: never the token
    Column("job_id", String(200), nullable=False, index=True),
    Column("issued_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)


SHUFFLE = "shuffle"
"""Reservation kind for shuffle correlations: a count, no chunks (hm3 derives them on request)."""


class ReservationError(RuntimeError):
    """A reservation cannot be made, accepted or served; the message says why."""


class TupleReuse(ReservationError):
    """Tuples before the served high-water mark were asked for again."""


@dataclass
class ReservationSpec:
    """Per kind: tuples asked for and the chunk ids (in order) that hold them."""

    kinds: dict[str, tuple[int, list[int]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: {"count": c, "chunks": ids} for k, (c, ids) in self.kinds.items()})

    @classmethod
    def from_json(cls, text: str) -> ReservationSpec:
        data = json.loads(text)
        return cls({k: (int(v["count"]), [int(i) for i in v["chunks"]]) for k, v in data.items()})

    def chunk_ids(self) -> list[int]:
        return [i for _, ids in self.kinds.values() for i in ids]


def _now() -> datetime:
    return datetime.now(UTC)


def blob_key(kind: str, chunk_id: int) -> str:
    return f"chunks/{kind.replace(':', '-')}/{chunk_id:012d}"


class ChunkStore:
    """The SQL index and blob shares of one party's tuple chunks."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs
        self._allocate = threading.Lock()
        # SQLite allows one writer; a deferred transaction that reads then writes can fail
        # with "database is locked" instead of waiting, so this process serialises them.
        self._sqlite_writer = threading.RLock() if engine.dialect.name == "sqlite" else None

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        if self._sqlite_writer is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._sqlite_writer, self.engine.begin() as connection:
            yield connection

    # -- job tokens (tally.tuples.job_tokens) ----------------------------------------------

    def add_job_token(
        self, digest: str, job_id: str, issued_by: str, created: datetime, expires: datetime
    ) -> None:
        """Record a job token by its digest."""
        row = {
            "digest": digest,
            "job_id": job_id,
            "issued_by": issued_by,
            "created_at": created,
            "expires_at": expires,
            "revoked_at": None,
        }
        with self._begin() as connection:
            connection.execute(insert(job_tokens).values(**row))

    def job_token(self, digest: str) -> tuple[str, str, datetime, datetime | None] | None:
        """(job id, issuer, expiry, revocation) of the token with ``digest``, or None."""
        with self._begin() as connection:
            row = connection.execute(
                select(job_tokens).where(job_tokens.c.digest == digest)
            ).first()
        if row is None:
            return None
        return row.job_id, row.issued_by, row.expires_at, row.revoked_at

    def revoke_job_tokens(self, job_id: str, now: datetime) -> int:
        """Revoke the live tokens of ``job_id``; how many there were."""
        with self._begin() as connection:
            result = connection.execute(
                update(job_tokens)
                .where(job_tokens.c.job_id == job_id, job_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return int(result.rowcount)

    def collect_job_tokens(self, now: datetime) -> int:
        """Drop expired and revoked tokens; how many."""
        with self._begin() as connection:
            result = connection.execute(
                delete(job_tokens).where(
                    (job_tokens.c.expires_at <= now) | job_tokens.c.revoked_at.is_not(None)
                )
            )
        return int(result.rowcount)

    # -- chunks ----------------------------------------------------------------------------

    def allocate(self, kind: str, chunk_count: int, size: int) -> list[int]:
        """Leader: reserve the next global chunk ids, recorded as ``generating``."""
        with self._allocate, self._begin() as connection:
            last = connection.execute(select(func.max(chunks.c.id))).scalar() or 0
            ids = list(range(int(last) + 1, int(last) + 1 + chunk_count))
            connection.execute(
                insert(chunks),
                [
                    {
                        "id": i,
                        "kind": kind,
                        "count": size,
                        "state": "generating",
                        "created_at": _now(),
                    }
                    for i in ids
                ],
            )
        return ids

    def store_chunk(
        self, chunk_id: int, kind: str, count: int, sections: Sequence[bytes], state: str
    ) -> None:
        """Write the shares, then record the chunk (followers: ``free``; leader: ``generating``)."""
        length = sum(len(s) for s in sections)
        self.blobs.put_stream(blob_key(kind, chunk_id), iter(sections), length)
        with self._begin() as connection:
            row = connection.execute(
                select(chunks.c.state, chunks.c.kind).where(chunks.c.id == chunk_id)
            ).first()
            if row is None:
                connection.execute(
                    insert(chunks).values(
                        id=chunk_id, kind=kind, count=count, state=state, created_at=_now()
                    )
                )
            elif row.state in ("generating", "discarded") and row.kind == kind:
                connection.execute(
                    update(chunks).where(chunks.c.id == chunk_id).values(state=state, count=count)
                )
            else:
                raise ReservationError(f"chunk {chunk_id} already exists as {row.state} {row.kind}")

    def mark_free(self, chunk_ids: Iterable[int]) -> None:
        """Leader: chunks every party has stored become available."""
        with self._begin() as connection:
            connection.execute(
                update(chunks)
                .where(and_(chunks.c.id.in_(list(chunk_ids)), chunks.c.state == "generating"))
                .values(state="free")
            )

    def generating(self) -> list[int]:
        """Chunk ids whose generation never finished (to discard after a restart)."""
        with self._begin() as connection:
            rows = connection.execute(select(chunks.c.id).where(chunks.c.state == "generating"))
            return [int(r.id) for r in rows]

    def discard(self, chunk_ids: Iterable[int]) -> None:
        """Drop unfinished or never-reserved chunks (never reserved or consumed ones)."""
        ids = list(chunk_ids)
        with self._begin() as connection:
            rows = connection.execute(
                select(chunks.c.id, chunks.c.kind).where(
                    and_(chunks.c.id.in_(ids), chunks.c.state.in_(["generating", "free"]))
                )
            ).all()
            connection.execute(
                update(chunks)
                .where(and_(chunks.c.id.in_(ids), chunks.c.state.in_(["generating", "free"])))
                .values(state="discarded")
            )
        for row in rows:
            self.blobs.delete(blob_key(row.kind, int(row.id)))

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Tuples per kind and state."""
        with self._begin() as connection:
            rows = connection.execute(
                select(chunks.c.kind, chunks.c.state, func.sum(chunks.c.count)).group_by(
                    chunks.c.kind, chunks.c.state
                )
            ).all()
        stats: dict[str, dict[str, int]] = {}
        for kind, state, total in rows:
            stats.setdefault(kind, {})[state] = int(total or 0)
        return stats

    def free_tuples(self, kind: str) -> int:
        with self._begin() as connection:
            total = connection.execute(
                select(func.sum(chunks.c.count)).where(
                    and_(chunks.c.kind == kind, chunks.c.state == "free")
                )
            ).scalar()
        return int(total or 0)

    # -- reservations --------------------------------------------------------------------

    def reserve_free(
        self, reservation_id: str, job_id: str, session: str, wants: dict[str, int]
    ) -> ReservationSpec:
        """Leader: pick free chunks covering ``wants`` and mark them, in one transaction."""
        spec = ReservationSpec()
        with self._begin() as connection:
            for kind, count in wants.items():
                if kind == SHUFFLE:
                    spec.kinds[kind] = (count, [])
                    continue
                parse_kind(kind)
                ids: list[int] = []
                total = 0
                if count > 0:
                    rows = connection.execute(
                        select(chunks.c.id, chunks.c.count.label("size"))
                        .where(and_(chunks.c.kind == kind, chunks.c.state == "free"))
                        .order_by(chunks.c.id)
                    )
                    for row in rows:
                        ids.append(int(row.id))
                        total += int(row.size)
                        if total >= count:
                            break
                if total < count:
                    raise ReservationError(
                        f"only {total} {kind} tuples are free, the job needs {count}; "
                        "wait for the pool to refill or raise its low-water mark"
                    )
                spec.kinds[kind] = (count, ids)
            self._record(connection, reservation_id, job_id, "pending", session, spec)
        return spec

    @staticmethod
    def _take(connection: Any, reservation_id: str, ids: list[int]) -> None:
        if not ids:
            return
        taken = connection.execute(
            update(chunks)
            .where(and_(chunks.c.id.in_(ids), chunks.c.state == "free"))
            .values(state="reserved", reservation_id=reservation_id)
        ).rowcount
        if taken != len(ids):
            raise ReservationError(f"{len(ids) - taken} of the {len(ids)} chunks are not free here")

    def accept(self, reservation_id: str, job_id: str, session: str, spec: ReservationSpec) -> None:
        """Follower: take exactly these chunks if all are held here, free and of the right kind."""
        with self._begin() as connection:
            existing = connection.execute(
                select(reservations.c.spec, reservations.c.state).where(
                    reservations.c.id == reservation_id
                )
            ).first()
            if existing is not None:
                if existing.spec == spec.to_json() and existing.state == "active":
                    return  # the leader resent it
                raise ReservationError(f"reservation {reservation_id} exists with other content")
            for kind, (count, ids) in spec.kinds.items():
                if kind == SHUFFLE:
                    continue
                rows = connection.execute(
                    select(chunks.c.id, chunks.c.count.label("size")).where(
                        and_(chunks.c.id.in_(ids), chunks.c.kind == kind, chunks.c.state == "free")
                    )
                ).all()
                if len(rows) != len(ids):
                    raise ReservationError(
                        f"{len(ids) - len(rows)} {kind} chunks of the reservation are not held "
                        "free here"
                    )
                if sum(int(r.size) for r in rows) < count:
                    raise ReservationError(f"the {kind} chunks hold fewer than {count} tuples")
            self._record(connection, reservation_id, job_id, "active", session, spec)

    def _record(
        self,
        connection: Connection,
        reservation_id: str,
        job_id: str,
        state: str,
        session: str,
        spec: ReservationSpec,
    ) -> None:
        """Take the reservation's chunks and insert its row, in ``connection``'s transaction."""
        self._take(connection, reservation_id, spec.chunk_ids())
        connection.execute(
            insert(reservations).values(
                id=reservation_id,
                job_id=job_id,
                state=state,
                session=session,
                spec=spec.to_json(),
                created_at=_now(),
            )
        )

    def set_state(self, reservation_id: str, state: str) -> None:
        with self._begin() as connection:
            connection.execute(
                update(reservations).where(reservations.c.id == reservation_id).values(state=state)
            )

    def reservation(self, reservation_id: str) -> tuple[str, str, str, ReservationSpec] | None:
        """(job id, state, session, spec) of a reservation, or None."""
        with self._begin() as connection:
            row = connection.execute(
                select(reservations).where(reservations.c.id == reservation_id)
            ).first()
        if row is None:
            return None
        return row.job_id, row.state, row.session, ReservationSpec.from_json(row.spec)

    def reservations_in(self, states: Sequence[str], job_id: str | None = None) -> list[str]:
        """Ids of the reservations in ``states`` (of one job, when ``job_id`` is given)."""
        query = select(reservations.c.id).where(reservations.c.state.in_(list(states)))
        if job_id is not None:
            query = query.where(reservations.c.job_id == job_id)
        with self._begin() as connection:
            return [r.id for r in connection.execute(query.order_by(reservations.c.created_at))]

    def take_range(
        self, reservation_id: str, kind: str, offset: int, count: int
    ) -> list[tuple[int, int, int]]:
        """Hand out tuples [offset, offset + count) of ``kind``: (chunk id, start, length) parts.

        In one transaction: the reservation must be active, the range must not
        start below what was already served, and every chunk it touches is
        marked consumed.
        """
        with self._begin() as connection:
            row = connection.execute(
                select(reservations.c.state, reservations.c.spec)
                .where(reservations.c.id == reservation_id)
                .with_for_update()
            ).first()
            if row is None:
                raise ReservationError(f"no reservation {reservation_id}")
            if row.state != "active":
                raise ReservationError(f"reservation {reservation_id} is {row.state}")
            spec = ReservationSpec.from_json(row.spec)
            if kind not in spec.kinds:
                raise ReservationError(f"reservation {reservation_id} holds no {kind} tuples")
            wanted, ids = spec.kinds[kind]
            if offset < 0 or count < 0 or offset + count > wanted:
                raise ReservationError(
                    f"{kind} tuples [{offset}, {offset + count}) are outside the {wanted} reserved"
                )
            mark = connection.execute(
                select(served.c.next_offset).where(
                    and_(served.c.reservation_id == reservation_id, served.c.kind == kind)
                )
            ).scalar()
            if mark is not None and offset < int(mark):
                raise TupleReuse(
                    f"{kind} tuples before {mark} of reservation {reservation_id} were already "
                    "served; tuples are never reused"
                )
            sizes = dict(
                connection.execute(
                    select(chunks.c.id, chunks.c.count.label("size")).where(chunks.c.id.in_(ids))
                ).all()
            )
            parts, touched, start = [], [], 0
            for chunk_id in ids:
                size = int(sizes[chunk_id])
                low, high = max(offset, start), min(offset + count, start + size)
                if low < high:
                    parts.append((chunk_id, low - start, high - low))
                    touched.append(chunk_id)
                start += size
            if touched:
                connection.execute(
                    update(chunks).where(chunks.c.id.in_(touched)).values(state="consumed")
                )
            if mark is None:
                connection.execute(
                    insert(served).values(
                        reservation_id=reservation_id, kind=kind, next_offset=offset + count
                    )
                )
            else:
                connection.execute(
                    update(served)
                    .where(and_(served.c.reservation_id == reservation_id, served.c.kind == kind))
                    .values(next_offset=offset + count)
                )
        return parts

    def take_shuffle(self, reservation_id: str, index: int) -> None:
        """Hand out shuffle correlation ``index`` once: it must be reserved and never served."""
        with self._begin() as connection:
            row = connection.execute(
                select(reservations.c.state, reservations.c.spec)
                .where(reservations.c.id == reservation_id)
                .with_for_update()
            ).first()
            if row is None or row.state != "active":
                raise ReservationError(f"reservation {reservation_id} is not active here")
            allowed = ReservationSpec.from_json(row.spec).kinds.get(SHUFFLE, (0, []))[0]
            if not 0 <= index < allowed:
                raise ReservationError(f"shuffle {index} is outside the {allowed} reserved")
            where = and_(served.c.reservation_id == reservation_id, served.c.kind == SHUFFLE)
            mark = connection.execute(select(served.c.next_offset).where(where)).scalar()
            if mark is not None and index < int(mark):
                raise TupleReuse(f"shuffle {index} of {reservation_id} was already served")
            if mark is None:
                connection.execute(
                    insert(served).values(
                        reservation_id=reservation_id, kind=SHUFFLE, next_offset=index + 1
                    )
                )
            else:
                connection.execute(update(served).where(where).values(next_offset=index + 1))

    def read_section(
        self, kind: Kind, chunk_id: int, chunk_count: int, start: int, length: int, section: int
    ) -> bytes:
        """Section ``section``'s bytes for tuples [start, start + length) of one chunk."""
        widths = [dtype.itemsize for dtype in kind.sections]
        section_offset = chunk_count * sum(widths[:section])
        try:
            return self.blobs.get_range(
                blob_key(kind.name, chunk_id),
                section_offset + start * widths[section],
                length * widths[section],
            )
        except BlobNotFound:
            raise ReservationError(f"chunk {chunk_id} is missing from the blob store") from None

    def chunk_count(self, chunk_id: int) -> int:
        with self._begin() as connection:
            return int(
                connection.execute(
                    select(chunks.c.count).where(chunks.c.id == chunk_id)
                ).scalar_one()
            )

    def prepare_release(self, reservation_id: str) -> list[int]:
        """Stop serving a reservation; return the ids of its chunks consumed here."""
        with self._begin() as connection:
            row = connection.execute(
                select(reservations.c.state).where(reservations.c.id == reservation_id)
            ).first()
            if row is None:
                return []
            if row.state in ("active", "pending"):
                connection.execute(
                    update(reservations)
                    .where(reservations.c.id == reservation_id)
                    .values(state="releasing")
                )
            rows = connection.execute(
                select(chunks.c.id).where(
                    and_(chunks.c.reservation_id == reservation_id, chunks.c.state == "consumed")
                )
            )
            return [int(r.id) for r in rows]

    def apply_release(self, reservation_id: str, consumed: Iterable[int]) -> None:
        """Mark ``consumed`` (from any party) consumed and free the reservation's other chunks."""
        used = list(consumed)
        with self._begin() as connection:
            if used:
                connection.execute(
                    update(chunks)
                    .where(and_(chunks.c.reservation_id == reservation_id, chunks.c.id.in_(used)))
                    .values(state="consumed")
                )
            connection.execute(
                update(chunks)
                .where(
                    and_(chunks.c.reservation_id == reservation_id, chunks.c.state == "reserved")
                )
                .values(state="free", reservation_id=None)
            )
            connection.execute(
                update(reservations)
                .where(reservations.c.id == reservation_id)
                .values(state="released")
            )
            connection.execute(delete(served).where(served.c.reservation_id == reservation_id))
