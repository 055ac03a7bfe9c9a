"""The ``tally`` command line, a thin layer over the SDK (:mod:`tally.client`).

Commands: ``local up|status|down``, ``upload``, ``datasets``, ``policy show|set``,
``run groupby|sum|count``, ``jobs``, ``status``, ``result``, ``demo``, ``version``.
Every command finds the deployment from ``--config``, ``TALLY_CONFIG`` or the current
one (``tally local up``).  Errors reach the user as one line on stderr and a non-zero
exit code, never as a traceback.  Results go to stdout; progress bars and notes to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import pandas as pd

import tally

F = TypeVar("F", bound=Callable[..., Any])

EPILOG_RUN = """\b
Examples:
  tally run groupby ad-views --by region --agg views=sum:views --agg n=count:views
  tally run groupby views-a views-b --by region --agg total=views:sum --domain north,south
  JOB=$(tally run groupby ad-views --by region --agg n=count:views --detach)
"""


def _err(text: str) -> None:
    click.echo(text, err=True)


class Context:
    """What every command needs: the chosen configuration and identity."""

    def __init__(self, config: str | None, identity: str | None, insecure: bool = False) -> None:
        self.config = config
        self.identity = identity
        self.insecure = insecure

    def cluster(self) -> Any:
        from tally.client.cluster import connect

        return connect(self.config, self.identity, insecure=self.insecure)


pass_context = click.make_pass_decorator(Context)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="\b\nQuick start:\n  tally local up\n  tally upload views.csv --name ad-views\n"
    "  tally run groupby ad-views --by region --agg views=sum:views",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="TALLY_CONFIG",
    help="parties.yaml of the deployment (default: TALLY_CONFIG, then the current one)",
)
@click.option("--identity", envvar="TALLY_IDENTITY", help="act as this identity of parties.yaml")
@click.option("--insecure", is_flag=True,
              help="allow plaintext http:// to other machines (trusted networks)")  # fmt: skip
@click.pass_context
def cli(context: click.Context, config: str | None, identity: str | None, insecure: bool) -> None:
    """Joint analytics over secret-shared tables."""
    context.obj = Context(config, identity, insecure)


# ---------------------------------------------------------------------- local


@cli.group()
def local() -> None:
    """The embedded deployment: every party on this machine.

    \b
    Examples:
      tally local up                 # 3 parties, state in ~/.local/share/tally/local
      tally local up --dir ./state   # another state folder
      tally local status
      tally local down
    """


def _state_dir(directory: str | None) -> Path | None:
    if directory is not None:
        return Path(directory)
    from tally.client.config import current_config_path

    current = current_config_path()
    if current is not None and (current.parent / "deployment.json").exists():
        return current.parent
    return None


@local.command("up")
@click.option("--parties", type=click.IntRange(2, 16), default=None, help="number of parties (3)")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="state folder")
@click.option(
    "--tuples",
    type=click.Choice(["hm3", "ot", "dealer"]),
    default=None,
    help="tuple generator: hm3 (3 parties, the default there), ot (any number, the "
    "default otherwise) or the insecure development dealer",
)
@click.option("--identity", "identities", multiple=True, help="also make tokens for this identity")
def local_up(
    parties: int | None, directory: str | None, tuples: str | None, identities: Sequence[str]
) -> None:
    """Start (or resume) a local deployment and make it the current one.

    Without --dir it resumes the current local deployment, else the default folder.
    """
    from tally.local_deployment import LocalDeployment

    deployment = LocalDeployment(_state_dir(directory), parties, tuples, identities)
    path = deployment.up()
    for line in deployment.describe():
        _err(line)
    _err(f"current deployment: {path}")


@local.command("status")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="state folder")
def local_status(directory: str | None) -> None:
    """Health of every service of every party."""
    from tally.local_deployment import LocalDeployment

    deployment = LocalDeployment(_state_dir(directory))
    states = deployment.status()
    _table(
        ["party", "service", "pid", "url", "state"],
        [
            ["-" if s.party is None else s.party, s.service, s.pid or "-", s.url, s.state]
            for s in states
        ],
    )
    if any(s.state != "ready" for s in states):
        sys.exit(1)


@local.command("down")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="state folder")
@click.option("--purge", is_flag=True, help="also delete the state folder")
def local_down(directory: str | None, purge: bool) -> None:
    """Stop the local deployment (its state stays unless --purge)."""
    from tally.local_deployment import LocalDeployment

    deployment = LocalDeployment(_state_dir(directory))
    stopped = deployment.down()
    if purge:
        deployment.purge()
    _err(f"stopped {len(stopped)} processes" + (f"; removed {deployment.dir}" if purge else ""))


# ---------------------------------------------------------------------- datasets


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected {what}")
        out[key] = value
    return out


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame; CSV rows are indexed by their line number."""
    from tally.client.errors import InputError

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", skipinitialspace=True)
            frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")
        else:
            raise InputError(f"{path}: give a .csv or .parquet file")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except ImportError as error:
        raise InputError(f"reading {path} needs an extra package: {error}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not a readable table: {error}") from None
    return frame


@cli.command("upload")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="dataset name")
@click.option("--key", "keys", multiple=True, help="key column (default: every text column)")
@click.option("--domain", "domains", multiple=True, metavar="COL=V1,V2,...",
              help="public list of all values of a key column")  # fmt: skip
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="tag the dataset")
@click.option("--partitions", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--mode", type=click.Choice(["direct", "masked"]), default="direct",
              show_default=True, help="masked: never hold every share at once")  # fmt: skip
@click.option("--share-with", multiple=True, help="identity that may use it in jobs")
@click.option("--replace", is_flag=True, help="replace your dataset of the same name")
@click.option("--dp-budget", type=click.FloatRange(0, 1000, min_open=True), default=None,
              help="total epsilon jobs may spend on it (each must then use dp)")  # fmt: skip
@pass_context
def upload(
    context: Context,
    file: Path,
    name: str,
    keys: Sequence[str],
    domains: Sequence[str],
    tags: Sequence[str],
    partitions: int,
    mode: str,
    share_with: Sequence[str],
    replace: bool,
    dp_budget: float | None,
) -> None:
    """Secret-share a CSV or Parquet file to every party.

    Numeric columns become integer or fixed-point columns, text columns key columns
    (unless --key names the keys).  Everything is checked before anything is sent.

    \b
    Examples:
      tally upload views.csv --name ad-views
      tally upload views.csv --name ad-views --key region --tag source=web --partitions 2
      tally upload views.csv --name ad-views --domain region=north,south,east,west
    """
    frame = read_table(file)
    domain_map = {k: v.split(",") for k, v in _pairs(domains, "COL=V1,V2,...").items()}
    key_list = list(keys) or None
    if key_list is not None:
        key_list = list(dict.fromkeys([*key_list, *domain_map]))
    with context.cluster() as cluster:
        dataset = cluster.upload(
            frame,
            name,
            tags=_pairs(tags, "KEY=VALUE"),
            partitions=partitions,
            mode=mode,
            keys=key_list,
            domains=domain_map or None,
            share_with=share_with,
            replace=replace,
            dp_budget=dp_budget,
        )
    _err(f"uploaded {dataset.name!r}: {dataset.rows} rows to {cluster.parties} parties")
    click.echo(dataset.id)


@cli.command("datasets")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="filter by tag")
@pass_context
def datasets(context: Context, tags: Sequence[str]) -> None:
    """List the datasets you own or may use."""
    with context.cluster() as cluster:
        found = cluster.datasets(tags=_pairs(tags, "KEY=VALUE"))
    rows = []
    for d in found:
        columns = " ".join(f"{c['name']}:{c['kind']}" for c in d.columns if c["name"] != "valid")
        user_tags = {k: v for k, v in d.tags.items() if k not in ("owner", "created")}
        user_tags = {k: v for k, v in user_tags.items() if not k.startswith("tally.")}
        tag_text = " ".join(f"{k}={v}" for k, v in user_tags.items())
        rows.append([d.name, d.owner, d.rows, d.partitions, columns, tag_text, d.id])
    _table(["name", "owner", "rows", "partitions", "columns", "tags", "id"], rows)


# ---------------------------------------------------------------------- jobs


def _job_options(function: F) -> F:
    for decorator in reversed(
        [
            click.option("--input", "inputs", multiple=True, help="dataset (repeatable)"),
            click.option("--detach", is_flag=True, help="print only the job id and return"),
            click.option("--wait", is_flag=True, hidden=True, help="wait (the default)"),
            click.option("--timeout", type=float, default=None, help="seconds to wait at most"),
            click.option(
                "--output",
                "--csv",
                "output",
                type=click.Path(dir_okay=False),
                help="also write the result as CSV",
            ),  # fmt: skip
            click.option("--plot", type=click.Path(dir_okay=False), help="bar chart (PNG)"),
        ]
    ):
        function = decorator(function)
    return function


def _parse_agg(text: str) -> tuple[str, tuple[str, str]]:
    from tally.client.table import FUNCTIONS

    name, sep, spec = text.partition("=")
    left, colon, right = spec.partition(":")
    if not sep or not colon or not name:
        raise click.BadParameter(f"{text!r}: expected NAME=FUNC:COLUMN, e.g. total=sum:views")
    if left in FUNCTIONS:
        return name, (right, left)
    if right in FUNCTIONS:
        return name, (left, right)
    raise click.BadParameter(f"{text!r}: the function must be one of {', '.join(FUNCTIONS)}")


def _submit(context: Context, query_of: Callable[[Any], Any], options: dict[str, Any]) -> None:
    with context.cluster() as cluster:
        query = query_of(cluster)
        job = query.run()
        if options["detach"]:
            click.echo(job.id)
            return
        _err(f"job {job.id}: {query.description}")
        frame = job.result(options["timeout"])
        _show_result(frame, options)


def _show_result(frame: pd.DataFrame, options: dict[str, Any]) -> None:
    _table(list(map(str, frame.columns)), frame.itertuples(index=False))
    if options.get("output"):
        frame.to_csv(options["output"], index=False)
        _err(f"wrote {options['output']}")
    if options.get("plot"):
        from tally.client.plot import bar_chart

        bars = bar_chart(frame, options["plot"])
        _err(f"wrote {options['plot']} ({bars} bars)")


def _table_names(datasets: Sequence[str], inputs: Sequence[str]) -> list[str]:
    names = [*datasets, *inputs]
    if not names:
        raise click.UsageError("name a dataset (DATASET or --input NAME)")
    return names


@cli.group()
def run() -> None:
    """Run a program on datasets; waits and prints the result (or --detach)."""


@run.command("groupby", epilog=EPILOG_RUN)
@click.argument("datasets", nargs=-1)
@click.option("--by", "by", multiple=True, required=True, help="key column (repeatable)")
@click.option("--agg", "aggs", multiple=True, required=True, metavar="NAME=FUNC:COL",
              help="aggregate: sum, count, mean, min or max of a column")  # fmt: skip
@click.option("--domain", help="all key values, comma-separated: pads the output to them")
@click.option("--max-groups", type=click.IntRange(1), help="pad the output to G groups")
@click.option("--min-group-size", type=click.IntRange(1), default=None,
              help="suppress groups with fewer rows, inside MPC")  # fmt: skip
@click.option("--dp-epsilon", type=float, help="differential privacy: epsilon")
@click.option("--dp-delta", type=float, default=1e-6, show_default=True, help="and delta")
@click.option("--dp-clip", "dp_clip", multiple=True, metavar="COLUMN=LO:HI",
              help="with dp: clip bounds of a summed column (repeatable)")  # fmt: skip
@click.option("--partitions", type=int, hidden=True, help="(taken from the datasets)")
@_job_options
@pass_context
def run_groupby(
    context: Context,
    /,
    datasets: Sequence[str],
    by: Sequence[str],
    aggs: Sequence[str],
    domain: str | None,
    max_groups: int | None,
    min_group_size: int | None,
    dp_epsilon: float | None,
    dp_delta: float,
    dp_clip: Sequence[str],
    partitions: int | None,
    **options: Any,
) -> None:
    """group_by(KEYS).agg(...) over one or more datasets (their rows concatenated)."""
    names = _table_names(datasets, options.pop("inputs"))
    aggregations = dict(_parse_agg(text) for text in aggs)
    values = domain.split(",") if domain else None
    dp = (
        {"epsilon": dp_epsilon, "delta": dp_delta, "clip": dict(map(_parse_clip, dp_clip))}
        if dp_epsilon
        else None
    )

    def query(cluster: Any) -> Any:
        table = cluster.table(*names)
        if partitions is not None and partitions != table.partitions:
            raise click.UsageError(
                f"the datasets have {table.partitions} partition(s); partitions are chosen "
                "at upload (tally upload --partitions P)"
            )
        grouped = table.group_by(
            list(by), domain=values, max_groups=max_groups, min_group_size=min_group_size
        )
        return grouped.agg(dp=dp, **aggregations)

    _submit(context, query, options)


def _parse_clip(text: str, option: str = "--dp-clip") -> tuple[str, list[float]]:
    column, _, bounds = text.partition("=")
    lo, _, hi = bounds.partition(":")
    try:
        pair = [float(lo), float(hi)]
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected COLUMN=LO:HI", param_hint=option) from None
    if not column or not pair[0] < pair[1]:
        raise click.BadParameter(f"{text!r}: expected COLUMN=LO:HI with LO < HI", param_hint=option)
    return column, pair


@run.command("sum")
@click.argument("datasets", nargs=-1)
@click.option("--column", required=True, help="the column to add up")
@_job_options
@pass_context
def run_sum(context: Context, /, datasets: Sequence[str], column: str, **options: Any) -> None:
    """The sum of a column."""
    names = _table_names(datasets, options.pop("inputs"))
    _submit(context, lambda cluster: cluster.table(*names).sum(column), options)


@run.command("count")
@click.argument("datasets", nargs=-1)
@_job_options
@pass_context
def run_count(context: Context, /, datasets: Sequence[str], **options: Any) -> None:
    """The number of rows."""
    names = _table_names(datasets, options.pop("inputs"))
    _submit(context, lambda cluster: cluster.table(*names).count(), options)


@cli.command("query")
@click.argument("statement")
@_job_options
@pass_context
def query_command(context: Context, /, statement: str, **options: Any) -> None:
    """Run one SQL statement: tables are dataset names, the table after JOIN has the
    unique key.

    \b
    Examples:
      tally query "SELECT campaign, SUM(amount) AS total FROM views
                   JOIN purchases USING (user_id) WHERE amount > 0 GROUP BY campaign"
      tally query "SELECT region, COUNT(*) AS n FROM sales WHERE age >= 18 GROUP BY region"
    """
    if options.pop("inputs"):
        raise click.UsageError("a query names its datasets in FROM and JOIN, not --input")
    _submit(context, lambda cluster: cluster.sql(statement), options)


# ---------------------------------------------------------------------- policy


@cli.group()
def policy() -> None:
    """A dataset's disclosure policy: what jobs on it may release, and to whom.

    \b
    Examples:
      tally policy show ad-views
      tally policy set ad-views --min-group-size 10 --recipient auditor
      tally policy set ad-views --program groupby --program sort --readers
      tally policy set ad-views --dp-required --epsilon-max 1 --budget 5 --clip views=0:100
      tally policy set ad-views --file policy.json
    """


@policy.command("show")
@click.argument("dataset")
@pass_context
def policy_show(context: Context, dataset: str) -> None:
    """Print a dataset's policy as JSON (the same at every party, or an error)."""
    with context.cluster() as cluster:
        click.echo(cluster.policy(dataset).model_dump_json(indent=2))


@policy.command("set")
@click.argument("dataset")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="the whole policy as JSON (other options then change it)")  # fmt: skip
@click.option("--program", "programs", multiple=True,
              help="a program jobs may run (repeat; replaces the list)")  # fmt: skip
@click.option("--recipient", "recipients", multiple=True,
              help="an identity that may receive outputs (repeat; replaces the list)")  # fmt: skip
@click.option("--readers/--no-readers", default=None,
              help="holders of a read grant may receive outputs")  # fmt: skip
@click.option("--submitter/--no-submitter", default=None,
              help="the job's submitter may receive outputs")  # fmt: skip
@click.option("--min-group-size", type=click.IntRange(0), default=None,
              help="suppress groups of fewer valid rows (0: off)")  # fmt: skip
@click.option("--dp-required/--dp-optional", default=None, help="jobs must use dp")
@click.option("--epsilon-max", type=click.FloatRange(0, min_open=True), default=None,
              help="epsilon one job may spend on it")  # fmt: skip
@click.option("--delta-max", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="delta one job may spend on it")  # fmt: skip
@click.option("--budget", type=click.FloatRange(0, min_open=True), default=None,
              help="total epsilon all jobs may spend")  # fmt: skip
@click.option("--delta-budget", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="total delta all jobs may spend")  # fmt: skip
@click.option("--clip", "clips", multiple=True, metavar="COLUMN=LO:HI",
              help="bounds a job's clip of the column must lie within (repeat)")  # fmt: skip
@click.option("--unit", default=None, help="privacy unit column jobs must bound by")
@click.option("--max-contributions", type=click.IntRange(1), default=None,
              help="at most this many rows per privacy unit")  # fmt: skip
@pass_context
def policy_set(context: Context, /, dataset: str, path: Path | None, **options: Any) -> None:
    """Change the policy of one of your datasets at every party; prints the result."""
    import json

    from tally.client.errors import InputError

    base: dict[str, Any] | None = None
    if path is not None:
        try:
            base = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable JSON policy ({error})") from None
    with context.cluster() as cluster:
        current = base if base is not None else cluster.policy(dataset).model_dump(mode="json")
        changed = _policy_changes(current, options)
        chosen = cluster.set_policy(dataset, changed)
    click.echo(chosen.model_dump_json(indent=2))


def _policy_changes(policy: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The policy with the options given on the command line applied."""
    recipients = dict(policy.get("recipients") or {})
    dp = dict(policy.get("dp") or {})
    if options["programs"]:
        policy["programs"] = list(options["programs"])
    if options["recipients"]:
        recipients["identities"] = list(options["recipients"])
    for flag in ("readers", "submitter"):
        if options[flag] is not None:
            recipients[flag] = options[flag]
    if options["min_group_size"] is not None:
        policy["min_group_size"] = options["min_group_size"]
    if options["dp_required"] is not None:
        dp["required"] = options["dp_required"]
    for name in ("epsilon_max", "delta_max", "budget", "delta_budget", "unit", "max_contributions"):
        if options[name] is not None:
            dp[name] = options[name]
    if options["clips"]:
        dp["clip"] = dict(_parse_clip(text, "--clip") for text in options["clips"])
    return {**policy, "recipients": recipients, "dp": dp}


@cli.command("jobs")
@pass_context
def jobs(context: Context) -> None:
    """Jobs submitted from this client, with their state at the parties."""
    from tally.client.errors import TallyError

    with context.cluster() as cluster:
        rows = []
        for job in cluster.jobs():
            try:
                status = job.status()
                state = f"{status.phase} {status.stage}/{status.stages_total}"
            except TallyError as error:
                state = f"unknown ({error})"[:60]
            rows.append([job.id, state, job.record.description])
    _table(["job", "state", "what"], rows)


@cli.command("status")
@click.argument("job_id")
@pass_context
def status(context: Context, job_id: str) -> None:
    """A job's phase and progress at every party."""
    with context.cluster() as cluster:
        state = cluster.job(job_id).status()
    _table(
        ["party", "phase", "stage", "restarts", "reason"],
        [
            [i, p["phase"], f"{p['stage']}/{p['stages_total']}", p["restarts"], p.get("reason", "")]
            for i, p in enumerate(state.parties)
        ],
    )
    click.echo(f"{job_id}: {state.phase}")


@cli.command("result")
@click.argument("job_id")
@click.option("--output", "--csv", "output", type=click.Path(dir_okay=False),
              help="write the result as CSV")  # fmt: skip
@click.option("--plot", type=click.Path(dir_okay=False), help="bar chart of the result (PNG)")
@click.option("--timeout", type=float, default=None, help="seconds to wait at most")
@pass_context
def result(
    context: Context, job_id: str, output: str | None, plot: str | None, timeout: float | None
) -> None:
    """Wait for a job and print its result (reconstructed from every party's shares)."""
    with context.cluster() as cluster:
        frame = cluster.job(job_id).result(timeout)
    _show_result(frame, {"output": output, "plot": plot})


# ---------------------------------------------------------------------- misc


@cli.command("demo")
def demo() -> None:
    """Run the demo: a 3-party deployment, two providers, a group-by checked with pandas."""
    from tally import demo as demo_module

    sys.exit(demo_module.main())


@cli.command("version")
def version() -> None:
    """Print the installed version."""
    click.echo(f"tally {tally.__version__}")


def _table(headers: Sequence[str], rows: Any) -> None:
    """A plain aligned table on stdout (no colours: scripts read it)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if value != value else f"{value:.6g}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tally`` console script; returns the exit code."""
    from tally.client.errors import TallyError

    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="tally",
                 standalone_mode=False)  # fmt: skip
    except click.exceptions.Abort:
        _err("tally: interrupted")
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as error:
        return int(error.code or 0) if not isinstance(error.code, str) else 1
    except KeyboardInterrupt:
        _err("tally: interrupted")
        return 130
    except TallyError as error:
        _err(f"tally: error: {error}")
        return 1
    except Exception as error:  # every failure becomes a message, not a traceback
        _err(f"tally: error: {type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
