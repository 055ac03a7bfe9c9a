"""A custom program for the execution tests (registered by the services' program_modules)."""

from __future__ import annotations

from collections.abc import Mapping

from tally.mpc.program import program
from tally.mpc.table import ColumnSpec, SecretTable


@program("doubled_total")
def doubled_total(tables: Mapping[str, SecretTable], *, column: str) -> dict[str, SecretTable]:
    """Twice the sum of one column over valid rows."""
    from tally.mpc.programs import total

    result = total(tables, column=column)["result"]
    doubled = result.columns[column].shares * 2
    from tally.mpc.columns import SecretColumn

    return {
        "result": result.with_columns(
            {column: SecretColumn(result.party, doubled)}, {column: ColumnSpec("int")}
        )
    }
