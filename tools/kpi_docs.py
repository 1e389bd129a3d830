"""The KPI table of docs/kpis.md, written from the registry (``projections.catalogue``).

    python -m tools.kpi_docs            # rewrite the table in docs/kpis.md
    python -m tools.kpi_docs --check    # exit 1 if it is out of date

The table sits between two marker comments; everything else in the page is prose.
"""

from __future__ import annotations

import sys
from pathlib import Path

from projections.catalogue import CATALOGUE, Kpi

PAGE = Path(__file__).resolve().parents[1] / "docs" / "kpis.md"
BEGIN = "<!-- registry: written by python -m tools.kpi_docs -->"
END = "<!-- end of registry -->"


def _row(kpi: Kpi) -> str:
    scopes = ", ".join(kpi.by_scope) if kpi.by_scope else "all"
    flags = [
        "lower is better" if kpi.lower_is_better else "higher is better",
        *(["current state"] if kpi.current_state else []),
        *(["exported per rep"] if kpi.per_rep else []),
        *(["not on the KPI topic"] if not kpi.published else []),
    ]
    label = f"`{kpi.label}`" if kpi.label else ""
    return (
        f"| `{kpi.id}` | {kpi.title} | {kpi.kind} | {kpi.unit} | {label} | `{kpi.metric}` "
        f"| {scopes} | {', '.join(flags)} |"
    )


def table() -> str:
    head = (
        "| id | title | kind | unit | label | metric | scopes | |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    return "\n".join([BEGIN, head, *map(_row, CATALOGUE), END])


def rendered(page: str) -> str:
    before, _, rest = page.partition(BEGIN)
    _, _, after = rest.partition(END)
    return before + table() + after


def main(argv: list[str]) -> int:
    page = PAGE.read_text()
    if BEGIN not in page or END not in page:
        print(f"{PAGE}: the registry markers are missing", file=sys.stderr)
        return 2
    fresh = rendered(page)
    if argv == ["--check"]:
        if fresh != page:
            print(f"{PAGE} is out of date: run python -m tools.kpi_docs", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
