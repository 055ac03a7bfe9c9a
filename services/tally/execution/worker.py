"""A job worker: one partition of one job at one party, as its own OS process.

    python -m tally.execution.worker <state_dir>/jobs/<job_id> <worker>
    python -m tally.execution.worker --external   (a Kubernetes pod: tally.execution.pod)

Started (and restarted after a crash) by the party's execution service, with the
service's environment (so the same ``TALLY_EXECUTION_*`` settings).  Steps:

1. load this party's shares of the partition's inputs; cut the program into stages;
2. start the PartyLink endpoint and publish its address in ``w<k>.json``;
3. build the mesh with every peer (:mod:`tally.execution.recovery` decides where
   to start: the newest stage every party holds a checkpoint of, and a tuple
   position no party has consumed);
4. run the stages from there, checkpointing after each; if a peer is lost,
   go back to 3 (a peer away longer than ``peer_timeout_s`` fails the job);
5. write the outputs (result datasets or this party's shares for the result API)
   and exit 0.  Exit code 3 means the job failed here (reason in ``w<k>.json``).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tally.common.blobstore import BlobStore
from tally.common.prf import AesCtrPrf
from tally.execution.checkpoint import CheckpointStore, encode_state
from tally.execution.control import ControlClient
from tally.execution.jobs import FINAL_PHASES, JobFiles, JobRecord, WorkerStatus
from tally.execution.leases import LeasedSource, LeasePolicy, TupleServiceProvider
from tally.execution.partylink import LinkIdentity, PartyLinkEndpoint, PartyLinkTransport, PeerLost
from tally.execution.planning import plan_tuples
from tally.execution.ports import (
    InputError,
    InputStore,
    ResultStore,
    ResultTable,
    ServiceError,
    TupleProvider,
)
from tally.execution.programs import input_tables, resolve_program, stage_inputs
from tally.execution.recovery import agree, hello_for
from tally.execution.settings import ExecutionSettings, blob_store, load_tls
from tally.execution.stages import StagedProgram, State, build_stages, initial_state, table_to_state
from tally.mpc.party import Party
from tally.mpc.program import Program
from tally.mpc.replicated import Replicated
from tally.mpc.reserved import TupleServiceError
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec, SecretTable
from tally.mpc.transport import TransportError
from tally.mpc.tuples import TupleReuseError, TupleSource

log = logging.getLogger("tally.execution.worker")

FAILED_EXIT = 3
SHARING_CODES = {"additive": 1, "replicated": 2}
"""What a worker sends its peers to check that all take the same online path."""


class JobFailed(Exception):
    """The job cannot finish; the message is the reason every user sees."""


def build_stores(
    settings: ExecutionSettings,
) -> tuple[BlobStore, InputStore, ResultStore, TupleProvider]:
    """The party's blob store, input/result stores and tuple provider from the settings."""
    from tally.execution.local import DealerTuples, LocalDatasets
    from tally.execution.remote import SecretStoreDatasets

    blobs = blob_store(settings)
    datasets: LocalDatasets | SecretStoreDatasets = LocalDatasets(blobs)
    if settings.inputs == "secret-store":
        datasets = SecretStoreDatasets(
            settings.secret_store_url,
            settings.secret_store_token.get_secret_value(),
            settings.service_timeout_s,
            settings.rest_ca,
        )
    tuples: TupleProvider = DealerTuples(
        settings.state_dir,
        settings.party,
        settings.parties,
        settings.dealer_secret.get_secret_value(),
    )
    if settings.tuples == "service":
        tuples = TupleServiceProvider(
            settings.tuples_url,
            settings.state_dir,
            settings.party,
            settings.parties,
            settings.tuples_token.get_secret_value(),
            LeasePolicy(settings.tuple_lease_min, settings.tuple_lease_max, settings.tuple_wait_s),
            settings.service_timeout_s,
            settings.rest_ca,
        )
    return blobs, datasets, datasets, tuples


class Worker:
    """Runs one worker of one job (see the module docstring)."""

    def __init__(self, settings: ExecutionSettings, files: JobFiles, index: int) -> None:
        self.settings = settings
        self.files = files
        self.index = index
        self.record: JobRecord = files.load_record()
        previous = files.load_worker(index)
        self.status = previous or WorkerStatus()
        self.status.pid = os.getpid()
        if previous is not None:  # a restart of a worker that died: a new mesh generation
            self.status.generation += 1
        self.blobs, self.inputs, self.results, self.tuples = build_stores(settings)
        self.checkpoints = CheckpointStore(self.blobs, files.job_id, index)
        self.generation = self.status.generation
        self._meta: dict[str, tuple[dict[str, ColumnSpec], int]] = {}

    # -- reporting ---------------------------------------------------------------------------

    def report(self, **changes: object) -> None:
        for name, value in changes.items():
            setattr(self.status, name, value)
        self.files.save_worker(self.index, self.status)

    # -- main ----------------------------------------------------------------------------------

    def run(self) -> int:
        endpoint: PartyLinkEndpoint | None = None
        try:
            started = time.perf_counter()
            program = resolve_program(self.record.spec.program, self.settings)
            tables_meta, plain_inputs = stage_inputs(
                self.inputs, self.record, self.index, self.settings.party
            )
            staged = build_stages(program, tables_meta, self._params())
            self.report(stages_total=len(staged.stages), load_seconds=time.perf_counter() - started)
            endpoint = self._endpoint()
            self.report(phase="Connecting", address=endpoint.address)
            self._meta = tables_meta
            outputs = self._run_stages(endpoint, program, staged, plain_inputs)
            self._write_outputs(outputs)
            self.checkpoints.clear()
            self.report(phase="Succeeded")
            return 0
        except (
            JobFailed,
            InputError,
            ServiceError,
            TupleServiceError,
            TupleReuseError,
            TransportError,
            ValueError,
            KeyError,
            TypeError,
        ) as error:
            reason = error.detail if isinstance(error, InputError) else str(error)
            log.error("job %s worker %d failed: %s", self.files.job_id, self.index, reason)
            self.report(phase="Failed", reason=reason)
            return FAILED_EXIT
        finally:
            self.checkpoints.close()
            if endpoint is not None:
                endpoint.close()

    def _params(self) -> dict[str, object]:
        params = dict(self.record.spec.params)
        if self.record.spec.dp:
            params["dp"] = self.record.spec.dp
        return params

    def _endpoint(self) -> PartyLinkEndpoint:
        tls = load_tls(self.settings)
        control = ControlClient(self.settings.party, self.settings.peer_directory(), tls)
        job_id, index = self.files.job_id, self.index

        async def locate(peer: int) -> str | None:
            reply = await control.locate(peer, job_id, index)
            if reply.phase in FINAL_PHASES:
                raise JobFailed(f"the job is {reply.phase} at party {peer}")
            return reply.address or None

        identity = LinkIdentity(job_id, index, self.settings.party, self.settings.parties)
        endpoint = PartyLinkEndpoint(
            identity, tls, locate, self.settings.worker_host, self.settings.io_timeout_s
        )
        endpoint.start()
        return endpoint

    def _run_stages(
        self,
        endpoint: PartyLinkEndpoint,
        program: Program,
        staged: StagedProgram,
        inputs: Mapping[str, Mapping[str, Shares]],
    ) -> dict[str, SecretTable]:
        total = len(staged.stages)
        memory: tuple[int, State] | None = None
        online_started: float | None = None  # from the first agreed mesh (recoveries count)
        while True:
            self.checkpoints.flush()
            held = self.checkpoints.held()
            hello = hello_for(
                self.record.spec_hash,
                self.generation,
                held,
                total,
                self.tuples.next_free(self.files.job_id, self.index),
            )
            # Before its first mesh a worker's peers may still be accepting the job and
            # reserving its tuples (a restarted party does both again): wait as long as
            # parties have to accept a job, not only as long as a lost peer may stay away.
            wait_s = self.settings.peer_timeout_s
            if online_started is None:
                wait_s = max(wait_s, self.settings.accept_timeout_s)
            try:
                mesh, hellos = endpoint.connect(hello, wait_s)
            except PeerLost as error:
                raise JobFailed(
                    f"a peer stayed away longer than {wait_s:.0f} s "
                    f"(this party was at stage {max(held, default=0)} of {total}): {error}"
                ) from None
            try:
                resume, tuple_start = agree(mesh, hello, hellos)
                self.checkpoints.prune(resume)
                leader_lost = functools.partial(mesh.lost, 0)  # party 0 reserves the tuples
                source = self.tuples.open(self.files.job_id, self.index, tuple_start, leader_lost)
                self._prefetch(source, program)
                mesh.broadcast([np.zeros(1, np.uint64)])  # every party holds its material
                online_started = online_started or time.perf_counter()
                party = Party(self.settings.party, mesh, source, self._replicated(mesh))
                if memory is not None and memory[0] == resume:
                    state = memory[1]
                elif resume == 0:
                    state = self._initial(program, party, inputs)
                else:
                    state = self.checkpoints.load(resume)[0]
                resumed = [*self.status.resumed_from, resume] if self.generation else []
                self.report(
                    phase="Running", generation=self.generation, stage=resume, resumed_from=resumed
                )
                for number in range(resume, total):
                    state = self._stage(party, mesh, staged, number, state)
                    memory = (number + 1, state)
                outputs = staged.finish(party, state)
                online = time.perf_counter() - online_started
                mesh.broadcast([np.zeros(1, np.uint64)])  # everyone is done before links close
                self.report(
                    online_seconds=online,
                    tuple_seconds=self.status.tuple_seconds + source.generation_seconds,
                )
                mesh.close()
                return outputs
            except PeerLost as error:
                log.warning(
                    "job %s worker %d lost a peer: %s", self.files.job_id, self.index, error
                )
                mesh.close(reason=f"party {self.settings.party} restarts the mesh: {error}")
                self.generation += 1
                self.report(phase="Connecting", generation=self.generation)

    def _replicated(self, mesh: PartyLinkTransport) -> Replicated | None:
        """The replicated path's pairwise keys for this mesh, or None on the additive path.

        One round first checks that every party's job takes the same path (each party's
        record carries its own settings' ``sharing``); then, on the replicated path, one
        round agrees fresh keys (16 bytes per party; a new mesh agrees new ones).
        """
        mine = SHARING_CODES[self.record.sharing]
        for peer, arrays in mesh.broadcast([np.array([mine], np.uint64)]).items():
            theirs = int(np.asarray(arrays[0]).ravel()[0]) if np.size(arrays[0]) else -1
            if theirs != mine:
                named = {code: name for name, code in SHARING_CODES.items()}
                raise JobFailed(
                    f"party {peer} runs this job on the {named.get(theirs, 'unknown')} path, "
                    f"this party on the {self.record.sharing} path: every party must set the "
                    "same TALLY_EXECUTION_SHARING"
                )
        if self.record.sharing != "replicated":
            return None
        return Replicated.agree(mesh, AesCtrPrf())

    def _prefetch(self, source: TupleSource, program: Program) -> None:
        """A first run's tuples from the tuple-service into memory, before the online phase."""
        limit = self.settings.tuple_prefetch_bytes
        if not isinstance(source, LeasedSource) or source.epoch != 0 or limit <= 0:
            return
        started = time.perf_counter()
        plan = plan_tuples(
            program,
            self._meta,
            self._params(),
            self.settings.parties,
            replicated=self.record.sharing == "replicated",
        )
        source.prefetch(plan.shuffles, limit)
        self.report(prefetch_seconds=time.perf_counter() - started)

    def _initial(
        self, program: Program, party: Party, inputs: Mapping[str, Mapping[str, Shares]]
    ) -> State:
        return initial_state(program, input_tables(party, self._meta, inputs))

    def _stage(
        self,
        party: Party,
        mesh: PartyLinkTransport,
        staged: StagedProgram,
        number: int,
        state: State,
    ) -> State:
        stage = staged.stages[number]
        sent, rounds = mesh.bytes_sent, mesh.rounds
        started = time.perf_counter()
        state = stage.run(party, state)
        seconds = time.perf_counter() - started
        position: dict[str, int] = getattr(party.tuples, "position", dict)()
        self.checkpoints.save(
            number + 1, state, {"tuples": position, "stage": stage.name}, prune_before=number - 2
        )
        self.report(
            stage=number + 1,
            stage_name=stage.name,
            bytes_sent=self.status.bytes_sent + mesh.bytes_sent - sent,
            rounds=self.status.rounds + mesh.rounds - rounds,
            stage_seconds=[*self.status.stage_seconds, round(seconds, 4)],
            bytes_per_round=[
                *self.status.bytes_per_round,
                (mesh.bytes_sent - sent) // max(mesh.rounds - rounds, 1),
            ],
            checkpoint_seconds=self.checkpoints.write_seconds,
        )
        return state

    def _write_outputs(self, outputs: Mapping[str, SecretTable]) -> None:
        spec = self.record.spec
        missing = set(spec.outputs) - set(outputs)
        if missing:
            raise JobFailed(f"the program produced no output named {sorted(missing)}")
        results = {}
        for name, target in spec.outputs.items():
            table = outputs[name]
            if target.kind == "open":
                state = State()
                table_to_state(table, "", state)
                self.blobs.put(
                    f"results/{self.files.job_id}/{name}/w{self.index}", encode_state(state)
                )
            else:
                part = ResultTable(
                    columns={n: c.shares for n, c in table.columns.items()},
                    specs=dict(table.specs),
                    valid=table.valid.shares,
                    derived={k: list(v) for k, v in table.derived.items()},
                    order=table.output_names,
                )
                results[name] = self.results.write(
                    spec.output_job_id(self.index),
                    name,
                    [part],
                    self.record.submitter,
                    list(target.recipients),
                )
        self.report(results=results)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m tally.execution.worker JOB_DIR WORKER``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--external"]:  # started by Kubernetes: see tally.execution.pod
        from tally.execution.pod import main as pod_main

        return pod_main(args[1:])
    if len(args) != 2:
        print("usage: python -m tally.execution.worker JOB_DIR WORKER", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job_dir, index = Path(args[0]), int(args[1])
    settings = ExecutionSettings()
    for module in settings.program_modules:
        __import__(module)
    files = JobFiles(job_dir.parent.parent, job_dir.name)
    return Worker(settings, files, index).run()


if __name__ == "__main__":
    raise SystemExit(main())
