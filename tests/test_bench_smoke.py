"""The benchmark report machinery, on made-up figures (no timing, no network).

The measuring side needs the ``bench`` extra (Pyro5, grpcio, psutil) and
takes about 30 s even with tiny counts, so it is exercised by
``make bench`` / ``benchmarks/run.py --quick``, not here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCH))


def _filled(run: ModuleType) -> list[Any]:
    rows = list(run.make_rows().values())
    for n, row in enumerate(rows):
        for k in range(3):
            row.add(100.0 + n + k, 50.0 + k)
    return rows


def test_text_table_has_every_row_and_a_ratio_column(run: ModuleType) -> None:
    rows = _filled(run)
    text = run.report.render_text(rows, "title")
    lines = text.splitlines()
    assert "ratio" in lines[1].split()
    body = lines[3 : 3 + len(rows)]
    assert len(body) == len(rows)
    for row, line in zip(rows, body, strict=True):
        assert line.startswith(row.scenario)
        assert row.metric in line and row.baseline in line
        assert f"{row.ratio:.2f}" in line


def test_ratio_is_the_median_of_per_round_ratios(run: ModuleType) -> None:
    row = run.report.Row("s", "m", "b", True, 1.0)
    for e, b in ((1.0, 1.0), (3.0, 1.0), (2.0, 4.0)):
        row.add(e, b)
    assert row.ratio == 1.0
    assert row.met is True


def test_a_missed_target_is_marked(run: ModuleType) -> None:
    row = run.report.Row("s", "latency", "b", False, 2.0)
    row.add(300.0, 100.0)
    assert row.met is False
    assert "MISSED" in row.target_text


def test_doc_section_is_replaced_and_the_prose_kept(run: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## What limits each figure\n\nprose\n")
    rows = _filled(run)
    run.report.write_section(doc, run.report.render_markdown(rows, "first", None))
    run.report.write_section(doc, run.report.render_markdown(rows, "second", "chart.png"))
    text = doc.read_text()
    assert text.count(run.report.END) == 1
    assert "first" not in text and "second" in text and "chart.png" in text
    assert "intro" in text and "prose" in text
    assert all(f"| {r.baseline} |" in text for r in rows)


def test_chart_is_a_png(run: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    run.report.write_chart(_filled(run), path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
