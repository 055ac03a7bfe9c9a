"""The embedded deployment: every party of a consortium on this machine (``tally.local``).

Each of n parties runs its secret-store, tuple-service and execution service as
separate OS processes (``python -m tally.…``) on free loopback ports, with SQLite
and local directories under one state folder::

    STATE/
      deployment.json      parties, generator, ports, identities (no secrets)
      secrets.json         bearer tokens, consortium keys (mode 0600)
      parties.yaml         the client configuration (mode 0600: it holds tokens)
      pids.json            the running processes (``up`` writes it, ``down`` removes it)
      pki/                 consortium CA, party certificates (PartyLink mutual TLS) and
                           rest-<i> certificates (HTTPS on every REST listener)
      party-<i>/           secret-store/, tuples/, execution/ of party i
      logs/                one log per process
      client/              the client's job records and key dictionary

State survives ``down``/``up``: datasets, tuples and job records stay; ports are
kept while they are free.  Tuples: ``hm3`` for three parties, ``ot`` (oblivious
transfer, secure against all parties but one) for any other number; no dealer
either way.  ``tuples="dealer"`` asks for the development dealer: a separate process
(``python -m tally.tuples.dealer``) deals to the parties' tuple-services; it is
insecure (it sees every tuple) and says so loudly.

The processes are started detached (their own session); ``down`` stops them with
SIGTERM (then SIGKILL) by the ids recorded in ``pids.json``.  Tokens are written
to files only, and shown truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

from tally.client.cluster import Cluster
from tally.client.config import load_config, redact, set_current
from tally.client.errors import ConfigError, TallyError
from tally.common.https import client_context
from tally.common.tls import party_name, write_test_pki
from tally.mpc.processes import free_ports

SERVICES = ("secret-store", "tuples", "execution")
DEALER = "dealer"
PORT_NAMES = ("secret_store", "tuples_http", "tuples_grpc", "execution", "control")
READY_TIMEOUT_S = 90.0
POD_ADDRESS = "10.96.0.10"
"""Where workers listen when each party has its own network namespace: one private
address, the same in every namespace (as overlapping pod networks are)."""
STOP_TIMEOUT_S = 10.0
SERVICE_IDENTITY = "execution"


class DeploymentError(TallyError):
    """The embedded deployment could not be started, stopped or read."""


def default_state_dir() -> Path:
    """``$XDG_DATA_HOME/tally/local`` (default ``~/.local/share/tally/local``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tally" / "local"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    temporary.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):  # a recycled pid is not ours
        return b"tally" in cmdline.read_bytes()
    return True


def rest_name(party: int) -> str:
    """The name on a party's REST listener certificate (never a party's PartyLink name)."""
    return f"rest-{party}"


@dataclass(frozen=True)
class ServiceState:
    """One process as ``status`` reports it."""

    party: int | None
    service: str
    url: str
    pid: int | None
    state: str


class LocalDeployment:
    """Start, stop and inspect an embedded deployment kept in one state folder."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        parties: int | None = None,
        tuples: str | None = None,
        identities: Sequence[str] | None = None,
        log: Any = None,
        networks: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """``networks``: one (network namespace, public address) per party, to run each
        party's processes in its own namespace (``ip netns exec``), reachable by the
        others and by clients only at its public address, with its workers on
        :data:`POD_ADDRESS` inside (the same in every namespace, as overlapping pod
        networks are).  The namespaces must exist; see :mod:`tally.netns`."""
        self.dir = (Path(directory) if directory is not None else default_state_dir()).resolve()
        self._log = log or (lambda text: print(text, file=sys.stderr))
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """The processes this object started, kept so that how they ended is known."""
        meta = self._read_json("deployment.json")
        if meta is not None:
            if parties is not None and parties != meta["parties"]:
                raise DeploymentError(
                    f"{self.dir} holds a {meta['parties']}-party deployment; use another --dir "
                    f"for {parties} parties (or remove it with `tally local down --purge`)"
                )
            if tuples is not None and tuples != meta["tuples"]:
                raise DeploymentError(
                    f"{self.dir} uses {meta['tuples']} tuples; use another --dir for {tuples}"
                )
            self.meta: dict[str, Any] = meta
            missing = [i for i in identities or () if i not in meta["identities"]]
            self.meta["identities"] = [*meta["identities"], *missing]
            self._restart = bool(missing)  # running services must learn the new tokens
        else:
            self._restart = False
            count = 3 if parties is None else parties
            self.meta = {
                "parties": count,
                "tuples": self._choose_tuples(count, tuples),
                "identities": list(dict.fromkeys(["you", *(identities or ())])),
                "ports": {},
            }
        if networks is not None:
            if len(networks) != self.meta["parties"]:
                raise DeploymentError(f"give one network per party ({self.meta['parties']})")
            if self.meta["tuples"] == DEALER:
                raise DeploymentError(
                    "the dealer listens on this machine's loopback, which the parties' "
                    "namespaces do not reach: use hm3 or ot tuples with separate networks"
                )
            self.meta["networks"] = [list(pair) for pair in networks]

    # ------------------------------------------------------------------ files

    def _read_json(self, name: str) -> Any:
        path = self.dir / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise DeploymentError(f"{path} is damaged ({error}); remove {self.dir}") from None

    @property
    def parties(self) -> int:
        return int(self.meta["parties"])

    @property
    def config_path(self) -> Path:
        """The client configuration this deployment writes."""
        return self.dir / "parties.yaml"

    @staticmethod
    def _choose_tuples(parties: int, tuples: str | None) -> str:
        if parties < 2:
            raise DeploymentError("a deployment needs at least 2 parties")
        if tuples in (None, "auto"):
            return "hm3" if parties == 3 else "ot"
        if tuples == "hm3" and parties != 3:
            raise DeploymentError(
                f"the hm3 generator needs exactly 3 parties; use ot for {parties}"
            )
        if tuples not in ("hm3", "ot", "dealer"):
            raise DeploymentError(f"unknown tuple generator {tuples!r}: use hm3, ot or dealer")
        return tuples

    def _secrets(self) -> dict[str, Any]:
        found = self._read_json("secrets.json")
        data: dict[str, Any] = found or {"tokens": {}}
        changed = found is None
        fresh: dict[str, Callable[[], Any]] = {
            "service_tokens": lambda: [secrets.token_urlsafe(32) for _ in range(self.parties)],
            "tuples_tokens": lambda: [secrets.token_urlsafe(32) for _ in range(self.parties)],
            "dealer_secret": lambda: secrets.token_urlsafe(32),
            "key_hash_secret": lambda: secrets.token_hex(32),
        }
        for name, make in fresh.items():
            if name not in data:
                data[name] = make()
                changed = True
        for identity in self.meta["identities"]:
            if identity not in data["tokens"]:
                data["tokens"][identity] = [secrets.token_urlsafe(32) for _ in range(self.parties)]
                changed = True
        if changed:
            _write_private(self.dir / "secrets.json", json.dumps(data))
        return data

    def _ports(self) -> dict[str, list[int]]:
        """Ports per service kind, kept from the last run while they are free."""
        counts = {n: self.parties for n in PORT_NAMES}
        if self.meta["tuples"] == DEALER:
            counts[DEALER] = 1
        ports: dict[str, list[int]] = self.meta.get("ports") or {}
        flat = [p for n in counts for p in ports.get(n, [])]
        if len(flat) != sum(counts.values()) or not all(_port_free(p) for p in flat):
            fresh = iter(free_ports(sum(counts.values())))
            ports = {n: [next(fresh) for _ in range(count)] for n, count in counts.items()}
        self.meta["ports"] = ports
        return ports

    def _public(self, party: int) -> str:
        """The address peers and clients reach ``party`` at."""
        networks = self.meta.get("networks")
        return str(networks[party][1]) if networks else "127.0.0.1"

    def _bind(self) -> str:
        """Where listeners that others reach bind (every address inside a namespace)."""
        return "0.0.0.0" if self.meta.get("networks") else "127.0.0.1"  # noqa: S104

    def _process_dir(self, service: str, party: int | None) -> Path:
        return self.dir / (service if party is None else f"party-{party}/{service}")

    # ------------------------------------------------------------------ environment

    def _service_tokens(self, secret: dict[str, Any], party: int, service: bool) -> str:
        specs: list[dict[str, Any]] = [
            {"identity": who, "sha256": _digest(tokens[party])}
            for who, tokens in secret["tokens"].items()
        ]
        if service:
            specs.append(
                {
                    "identity": SERVICE_IDENTITY,
                    "sha256": _digest(secret["service_tokens"][party]),
                    "service": True,
                }
            )
        return json.dumps(specs)

    def _env(self, service: str, party: int | None, secret: dict[str, Any]) -> dict[str, str]:
        ports = self.meta["ports"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # a crash in native code still leaves a trace in the log
        tuple_link = json.dumps(
            [f"{self._public(q)}:{p}" for q, p in enumerate(ports["tuples_grpc"])]
        )
        if party is None:  # the dealer
            ca, cert, key = self.pki_paths(DEALER)
            env.update(
                TALLY_DEALER_LISTEN=f"127.0.0.1:{ports[DEALER][0]}",
                TALLY_DEALER_PEERS=tuple_link,
                TALLY_DEALER_NAME=DEALER,
                TALLY_DEALER_SECRET=secret["dealer_secret"],
                TALLY_DEALER_TLS_CA=str(ca),
                TALLY_DEALER_TLS_CERT=str(cert),
                TALLY_DEALER_TLS_KEY=str(key),
            )
        elif service == "secret-store":
            base = self._process_dir("secret-store", party)
            env.update(self._https_env("TALLY_SECRET_STORE_", party))
            env.update(
                TALLY_SECRET_STORE_PARTY=str(party),
                TALLY_SECRET_STORE_DATABASE_URL=f"sqlite:///{base / 'metadata.db'}",
                TALLY_SECRET_STORE_BLOB_DIR=str(base / "blobs"),
                TALLY_SECRET_STORE_TOKENS=self._service_tokens(secret, party, service=True),
                TALLY_SECRET_STORE_PENDING_TIMEOUT_S="3600",  # abandoned uploads go after 1 h
                TALLY_SECRET_STORE_GC_INTERVAL_S="60",
            )
        elif service == "tuples":
            base = self._process_dir("tuples", party)
            env.update(self._https_env("TALLY_TUPLES_", party))
            env.update(
                TALLY_TUPLES_PARTY=str(party),
                TALLY_TUPLES_PEERS=tuple_link,
                TALLY_TUPLES_HTTP_PORT=str(ports["tuples_http"][party]),
                TALLY_TUPLES_HTTP_HOST=self._bind(),
                TALLY_TUPLES_GRPC_LISTEN=f"{self._bind()}:{ports['tuples_grpc'][party]}",
                TALLY_TUPLES_DATABASE_URL=f"sqlite:///{base / 'index.db'}",
                TALLY_TUPLES_BLOB_DIR=str(base / "chunks"),
                TALLY_TUPLES_GENERATOR=self.meta["tuples"],
                TALLY_TUPLES_TOKENS=json.dumps(
                    [
                        {
                            "identity": SERVICE_IDENTITY,
                            "sha256": _digest(secret["tuples_tokens"][party]),
                        }
                    ]
                ),
                TALLY_TUPLES_TLS_CA=str(self.pki_paths(party_name(party))[0]),
                TALLY_TUPLES_TLS_CERT=str(self.pki_paths(party_name(party))[1]),
                TALLY_TUPLES_TLS_KEY=str(self.pki_paths(party_name(party))[2]),
                TALLY_TUPLES_CHUNK_SIZE=str(1 << 16),
                TALLY_TUPLES_REPLENISH="false",
            )
            if self.meta["tuples"] == DEALER:
                env.update(
                    TALLY_TUPLES_DEALER=f"127.0.0.1:{ports[DEALER][0]}",
                    TALLY_TUPLES_DEALER_NAME=DEALER,
                )
        else:
            env.update(self._execution_env(party, secret))
        return env

    def _execution_env(self, party: int, secret: dict[str, Any]) -> dict[str, str]:
        ports = self.meta["ports"]
        ca, cert, key = self.pki_paths(party_name(party))
        env = {
            "TALLY_EXECUTION_PARTY": str(party),
            "TALLY_EXECUTION_PEERS": json.dumps(
                [f"{self._public(q)}:{p}" for q, p in enumerate(ports["control"])]
            ),
            # hm3 with three parties: the online phase takes the replicated path.
            "TALLY_EXECUTION_TUPLE_GENERATOR": self.meta["tuples"],
            "TALLY_EXECUTION_CONTROL_HOST": self._bind(),
            "TALLY_EXECUTION_WORKER_HOST": POD_ADDRESS
            if self.meta.get("networks")
            else "127.0.0.1",
            "TALLY_EXECUTION_STATE_DIR": str(self._process_dir("execution", party)),
            "TALLY_EXECUTION_TOKENS": self._service_tokens(secret, party, service=False),
            "TALLY_EXECUTION_TLS_CA": str(ca),
            "TALLY_EXECUTION_TLS_CERT": str(cert),
            "TALLY_EXECUTION_TLS_KEY": str(key),
            "TALLY_EXECUTION_PEER_TIMEOUT_S": "10",
            "TALLY_EXECUTION_ACCEPT_TIMEOUT_S": "30",
            "TALLY_EXECUTION_INPUTS": "secret-store",
            "TALLY_EXECUTION_SECRET_STORE_URL": self.url("secret-store", party, inside=True),
            "TALLY_EXECUTION_SECRET_STORE_TOKEN": secret["service_tokens"][party],
            "TALLY_EXECUTION_TUPLES": "service",
            "TALLY_EXECUTION_TUPLES_URL": self.url("tuples", party, inside=True),
            "TALLY_EXECUTION_TUPLES_TOKEN": secret["tuples_tokens"][party],
            "TALLY_EXECUTION_REST_CA": str(ca),
            **self._https_env("TALLY_EXECUTION_", party),
        }
        return env

    def _https_env(self, prefix: str, party: int) -> dict[str, str]:
        """The REST listener's certificate (from the deployment's CA, valid for 127.0.0.1)."""
        _, cert, key = self.pki_paths(rest_name(party))
        return {f"{prefix}HTTPS_CERT": str(cert), f"{prefix}HTTPS_KEY": str(key)}

    def _http(self) -> httpx.Client:
        """A client that verifies the services against the deployment's CA."""
        return httpx.Client(
            timeout=2.0, trust_env=False, verify=client_context(self.pki_paths("ca")[0])
        )

    def pki_paths(self, name: str) -> tuple[Path, Path, Path]:
        """The consortium CA and the certificate and key of ``party-<i>`` or the dealer."""
        pki = self.dir / "pki"
        return pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key"

    def _command(self, service: str, party: int | None) -> list[str]:
        networks = self.meta.get("networks")
        command = self._python_command(service, party)
        if networks and party is not None:
            return ["ip", "netns", "exec", str(networks[party][0]), *command]
        return command

    def _python_command(self, service: str, party: int | None) -> list[str]:
        ports = self.meta["ports"]
        bind = ["--host", self._bind()]
        if party is None:
            return [sys.executable, "-m", "tally.tuples.dealer"]
        if service == "secret-store":
            port = ports["secret_store"][party]
            return [sys.executable, "-m", "tally.secret_store", "serve", "--port", str(port),
                    "--log-level", "warning", *bind]  # fmt: skip
        if service == "tuples":
            return [sys.executable, "-m", "tally.tuples"]
        port = str(ports["execution"][party])
        return [sys.executable, "-m", "tally.execution", "--port", port, *bind]

    def processes(self) -> list[tuple[str, int | None]]:
        """Every process as (service, party): three per party, and the dealer if any."""
        out: list[tuple[str, int | None]] = [
            (service, party) for party in range(self.parties) for service in SERVICES
        ]
        return out + ([(DEALER, None)] if self.meta["tuples"] == DEALER else [])

    def url(self, service: str, party: int | None, inside: bool = False) -> str:
        """The REST base URL of a service (the dealer's gRPC address); ``inside``: as the
        party's own services reach it (loopback, in its namespace)."""
        if party is None:
            return f"grpc://127.0.0.1:{self.meta['ports'][DEALER][0]}"
        key = {"secret-store": "secret_store", "tuples": "tuples_http", "execution": "execution"}
        host = "127.0.0.1" if inside else self._public(party)
        return f"https://{host}:{self.meta['ports'][key[service]][party]}"

    # ------------------------------------------------------------------ lifecycle

    def running(self) -> dict[str, int]:
        """Recorded processes that are still alive: ``"<service>/<party>" -> pid``."""
        pids: dict[str, int] = self._read_json("pids.json") or {}
        return {name: pid for name, pid in pids.items() if _alive(pid)}

    def up(self, make_current: bool = True) -> Path:
        """Start every process not yet running, wait until all are ready; returns parties.yaml."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        running = self.running()
        if running and len(running) == len(self.processes()) and not self._restart:
            self._write_config(self._secrets())
            if make_current:
                set_current(self.config_path)
            return self.config_path
        if running:
            self.down()
        if self.meta["tuples"] == DEALER:
            self._log(
                "WARNING: tuples come from a DEALER process, which sees every tuple: it and "
                "anyone with its secret (in this state folder) can rebuild every share. "
                "For development only; never use it for real data."
            )
        self._ports()
        secret = self._secrets()
        names = [party_name(p) for p in range(self.parties)]
        names += [DEALER] if self.meta["tuples"] == DEALER else []
        rest = [rest_name(p) for p in range(self.parties)]  # HTTPS on every REST listener
        public = {rest_name(p): [self._public(p)] for p in range(self.parties)}
        write_test_pki(self.dir / "pki", names, loopback=rest, addresses=public)  # fresh
        _write_private(self.dir / "deployment.json", json.dumps(self.meta, indent=2))
        self._write_config(secret)
        pids: dict[str, int] = {}
        try:
            for service, party in self.processes():
                pids[_name(service, party)] = self._start(service, party, secret)
            _write_private(self.dir / "pids.json", json.dumps(pids))
            self._wait_ready(pids)
        except BaseException:
            self.down()
            raise
        if make_current:
            set_current(self.config_path)
        return self.config_path

    def _start(self, service: str, party: int | None, secret: dict[str, Any]) -> int:
        self.log_path(service, party).parent.mkdir(parents=True, exist_ok=True)
        self._process_dir(service, party).mkdir(parents=True, exist_ok=True)
        with self.log_path(service, party).open("ab") as log:
            process = subprocess.Popen(
                self._command(service, party),
                env=self._env(service, party, secret),
                cwd=self._process_dir(service, party),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[process.pid] = process
        return process.pid

    def _ready(self, http: httpx.Client, service: str, party: int | None) -> bool:
        if party is None:  # the dealer serves gRPC only: listening is ready
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.meta["ports"][DEALER][0]), timeout=1.0),
            ):
                return True
            return False
        with contextlib.suppress(httpx.HTTPError):
            return http.get(self.url(service, party) + "/readyz").status_code == 200
        return False

    def _wait_ready(self, pids: dict[str, int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = {_parse_name(name): pid for name, pid in pids.items()}
        retried: set[tuple[str, int | None]] = set()
        with self._http() as http:
            while waiting:
                for (service, party), pid in list(waiting.items()):
                    ended = self._ended(pid)
                    if ended is not None:
                        where = "the dealer" if party is None else f"{service} of party {party}"
                        if (service, party) not in retried:  # one more try, said aloud
                            retried.add((service, party))
                            self._log(
                                f"{where} ended while starting ({ended}): "
                                f"{self.last_error(service, party)}; starting it once more"
                            )
                            restarted = self._start(service, party, self._secrets())
                            waiting[(service, party)] = pids[_name(service, party)] = restarted
                            recorded: dict[str, int] = self._read_json("pids.json") or {}
                            recorded[_name(service, party)] = restarted
                            _write_private(self.dir / "pids.json", json.dumps(recorded))
                            continue
                        raise DeploymentError(
                            f"{where} exited while starting ({ended}): "
                            f"{self.last_error(service, party)} "
                            f"(log: {self.log_path(service, party)})"
                        )
                    if self._ready(http, service, party):
                        del waiting[(service, party)]
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(sorted(_name(*key) for key in waiting))
                    raise DeploymentError(f"not ready after {READY_TIMEOUT_S:.0f} s: {names}")
                time.sleep(0.2)

    def _ended(self, pid: int) -> str | None:
        """How a process this deployment started has ended, or None while it runs."""
        child = self._children.get(pid)
        if child is None:  # started by another object: all we have is the pid
            ended = _exit_status(pid)
            return ended if ended is not None or _alive(pid) else "gone"
        code = child.poll()
        if code is None and not _alive(pid):  # exiting right now: wait for its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=2.0)
        return None if code is None else _describe_exit(code)

    def log_path(self, service: str, party: int | None) -> Path:
        """Where one process logs."""
        return self.dir / "logs" / f"{_name(service, party).replace('/', '-')}.log"

    def last_error(self, service: str, party: int | None) -> str:
        """The last non-empty line of one process's log (usually the error)."""
        path = self.log_path(service, party)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return next((line.strip() for line in reversed(lines) if line.strip()), "(no log)")

    def stop_process(self, service: str, party: int | None, hard: bool = False) -> None:
        """Stop one process (tests take a party down this way)."""
        pids: dict[str, int] = self._read_json("pids.json") or {}
        pid = pids.get(_name(service, party))
        if pid is not None:
            _stop_group([pid], signal.SIGKILL if hard else signal.SIGTERM)

    def start_process(self, service: str, party: int | None) -> None:
        """Start one process again (after :meth:`stop_process`) and wait until it is ready."""
        pids: dict[str, int] = self._read_json("pids.json") or {}
        name = _name(service, party)
        pids[name] = self._start(service, party, self._secrets())
        _write_private(self.dir / "pids.json", json.dumps(pids))
        self._wait_ready({name: pids[name]})

    def down(self) -> list[str]:
        """Stop every recorded process (SIGTERM, then SIGKILL); state stays.  Returns names."""
        pids: dict[str, int] = self._read_json("pids.json") or {}
        alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        _stop_group(list(alive.values()), signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "pids.json").unlink()
        return sorted(alive)

    def status(self) -> list[ServiceState]:
        """Every service of every party: running and ready, or why not."""
        if self._read_json("deployment.json") is None:
            raise DeploymentError(f"no deployment in {self.dir}: run `tally local up`")
        pids: dict[str, int] = self._read_json("pids.json") or {}
        out = []
        with self._http() as http:
            for service, party in self.processes():
                pid = pids.get(_name(service, party))
                url = self.url(service, party)
                if pid is None or not _alive(pid):
                    out.append(ServiceState(party, service, url, None, "stopped"))
                    continue
                state = "ready" if self._ready(http, service, party) else "not answering"
                out.append(ServiceState(party, service, url, pid, state))
        return out

    def purge(self) -> None:
        """Stop everything and delete the state folder."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ client configuration

    def _write_config(self, secret: dict[str, Any]) -> None:
        parties = []
        for party in range(self.parties):
            entry: dict[str, Any] = {
                "name": f"party-{party}",
                "secret_store": self.url("secret-store", party),
                "execution": self.url("execution", party),
                "tuples": self.url("tuples", party),
                "ca": "pki/ca.pem",
            }
            entry["tokens"] = {who: tokens[party] for who, tokens in secret["tokens"].items()}
            parties.append(entry)
        config = {
            "version": 1,
            "name": f"local ({self.dir.name})",
            "identity": "you",
            "key_hash_secret": secret["key_hash_secret"],
            "client_dir": "client",
            "parties": parties,
        }
        header = (
            "# Tally client configuration, written by `tally local up`.\n"
            "# It holds bearer tokens: keep it private.\n"
        )
        _write_private(self.config_path, header + yaml.safe_dump(config, sort_keys=False))

    def connect(self, identity: str | None = None, show_progress: bool | None = None) -> Cluster:
        """A client of this deployment (``identity`` defaults to ``you``)."""
        return Cluster(load_config(self.config_path, identity), show_progress)

    def describe(self) -> list[str]:
        """Lines for ``tally local up``: endpoints and (truncated) tokens."""
        secret = self._secrets()
        lines = [f"{self.parties} parties, tuples: {self.meta['tuples']}, state: {self.dir}"]
        for party in range(self.parties):
            urls = "  ".join(f"{s} {self.url(s, party)}" for s in SERVICES)
            lines.append(f"  party {party}: {urls}")
        if self.meta["tuples"] == DEALER:
            lines.append(f"  dealer: {self.url(DEALER, None)}")
        tokens = ", ".join(f"{who} {redact(t[0])}" for who, t in secret["tokens"].items())
        lines.append(f"  tokens (party 0): {tokens}  (full tokens in {self.config_path})")
        return lines


def _name(service: str, party: int | None) -> str:
    """A process's key in pids.json: ``service/party``, or ``dealer``."""
    return service if party is None else f"{service}/{party}"


def _parse_name(name: str) -> tuple[str, int | None]:
    service, _, party = name.partition("/")
    return service, int(party) if party else None


def _describe_exit(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _exit_status(pid: int) -> str | None:
    """Reap ``pid`` if it is our exited child: how it ended ("exit code 1", "signal 9"),
    or None while it runs (or is not our child)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done != pid:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _stop_group(pids: list[int], first: signal.Signals) -> None:
    """Signal each process group, wait, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, first)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_alive(p) and _exit_status(p) is None for p in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


class LocalCluster(Cluster):
    """A :class:`Cluster` of an embedded deployment it started; ``close()`` stops it."""

    def __init__(self, deployment: LocalDeployment, temporary: bool, **kwargs: Any) -> None:
        super().__init__(load_config(deployment.config_path), **kwargs)
        self.deployment = deployment
        self._temporary = temporary

    def close(self) -> None:
        """Close the client, stop the deployment and (if temporary) delete its state."""
        super().close()
        if self._temporary:
            self.deployment.purge()
        else:
            self.deployment.down()


def local(
    parties: int = 3,
    directory: str | os.PathLike[str] | None = None,
    *,
    tuples: str | None = None,
    identities: Sequence[str] = (),
    show_progress: bool | None = None,
) -> LocalCluster:
    """Start an embedded deployment and return its :class:`Cluster`; use it in ``with``.

    Without ``directory`` the state lives in a temporary folder removed on close.
    """
    temporary = directory is None
    folder = Path(tempfile.mkdtemp(prefix="tally-local-") if directory is None else directory)
    try:
        deployment = LocalDeployment(folder, parties, tuples, identities)
        deployment.up(make_current=False)
    except BaseException:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        return LocalCluster(deployment, temporary, show_progress=show_progress)
    except ConfigError:
        deployment.down()
        raise
