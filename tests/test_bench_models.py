"""Model benchmarking against the emulator: scoring, history, regressions, the report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from billing.store import open_store
from service.bench.models import NO_CHART, Summary, load_suite, report, run, score
from service.cli import main
from service.emulator.faults import Fault
from service.upstream.openrouter import OpenRouterClient

from .conftest import Emulator

A, B = "meta-llama/llama-3.1-8b-instruct", "openai/gpt-4o-mini"
SUITE = {
    "name": "test-suite",
    "prompts": [
        {
            "id": "arith",
            "prompt": "17 * 23? [[reply:391]]",
            "max_tokens": 5,
            "check": {"kind": "exact", "value": "391"},
        },
        {
            "id": "verdict",
            "prompt": f"Sure? [[reply:yes]] [[reply@{B}:no]]",
            "max_tokens": 5,
            "check": {"kind": "regex", "value": "(?i)^yes"},
        },
    ],
}


def test_checks() -> None:
    assert score(" 391 ", {"kind": "exact", "value": "391"}) == 1.0
    assert score("it is Canberra.", {"kind": "contains", "value": "Canberra"}) == 1.0
    assert score("no", {"kind": "regex", "value": "(?i)^yes"}) == 0.0
    schema = {"type": "object", "required": ["born"], "properties": {"born": {"const": 1815}}}
    assert score('{"born": 1815}', {"kind": "json_schema", "schema": schema}) == 1.0
    assert score('{"born": "1815"}', {"kind": "json_schema", "schema": schema}) == 0.0
    assert score("not json", {"kind": "json_schema", "schema": schema}) == 0.0
    with pytest.raises(ValueError, match="unknown check"):
        score("x", {"kind": "vibes"})
    assert len(load_suite()["prompts"]) >= 5


async def test_runs_are_kept_compared_and_reported(
    client: OpenRouterClient, emulator: Emulator, tmp_path: Path
) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/bench.db")
    try:
        first = {s.model: s for s in await run(client, store, [A, B], SUITE, deadline=2)}
        assert first[A].score == 1.0
        assert first[B].score == 0.5
        assert first[A].cost_nusd > 0
        assert first[A].ttft_p50_ms is not None
        assert first[A].regressions == ()
        emulator.state.faults.set(B, Fault(kind="bad_gateway"))
        second = {s.model: s for s in await run(client, store, [A, B], SUITE, deadline=2)}
        async with store.read() as tx:
            history = await tx.bench_results(B)
    finally:
        await store.close()
    assert second[B].errors == 2
    assert second[B].regressions == ("score 0.50 -> 0.00",)
    assert second[A].regressions == ()
    assert len(history) == 4  # two prompts, two runs
    markdown, chart = report(list(second.values()), SUITE, tmp_path / "out")
    assert "score 0.50 -> 0.00" in markdown.read_text()
    assert chart is not None
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import matplotlib`` raises ImportError from here on, as where it is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_without_matplotlib_the_report_is_the_table_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_matplotlib(monkeypatch)
    summary = Summary(A, 1.0, None, 12.0, 10, 1_000, 0)
    markdown, chart = report([summary], SUITE, tmp_path)
    assert chart is None
    assert not (tmp_path / "bench-models.png").exists()
    text = markdown.read_text()
    assert f"| {A} | 1.00 |" in text
    assert "bench-models.png" not in text  # no link to a chart that is not there


def test_bench_models_runs_without_matplotlib_and_says_why_there_is_no_chart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _without_matplotlib(monkeypatch)
    for name in [n for n in os.environ if n.startswith(("SATROUTER_", "OPENROUTER_"))]:
        monkeypatch.delenv(name)  # no OpenRouter key: bench-models runs against the emulator
    monkeypatch.setenv("SATROUTER_DATABASE_URL", f"sqlite:///{tmp_path}/bench.db")
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(SUITE))
    out = tmp_path / "out"
    assert main(["bench-models", "--models", A, "--suite", str(suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert NO_CHART in printed
    assert (out / "bench-models.md").exists()
    assert not (out / "bench-models.png").exists()
