"""``satrouter bench-models``: run a prompt suite across models and keep the results.

Each prompt goes to each model as a stream (so the time to the first token is measured), its
answer is scored by the prompt's check (``exact``, ``contains``, ``regex`` or ``json_schema``),
and its cost is OpenRouter's ``/generation`` record (the inline cost when that does not appear in
time). Results go to the database; each model is compared with its previous run, and a drop in
score, or a rise in latency (beyond 100 ms of jitter) or cost by half, is flagged as a
regression. The report is a Markdown
table and, with matplotlib installed (the ``charts`` extra), a PNG chart of cost against score,
the marker size showing latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from billing.money import NanoUsd, Rounding
from billing.store import Store

from ..upstream.errors import UpstreamError
from ..upstream.openrouter import GenerationNotReady, OpenRouterClient

#: Latency changes smaller than this are jitter, not a regression, however large in relative terms.
LATENCY_NOISE_MS = 100.0


def load_suite(path: Path | None = None) -> dict[str, Any]:
    if path is not None:
        return dict(json.loads(path.read_text()))
    text = resources.files("service.bench").joinpath("suite.json").read_text()
    return dict(json.loads(text))


def score(answer: str, check: dict[str, Any]) -> float:
    """1.0 when the answer passes the check, else 0.0."""
    kind = check["kind"]
    text = answer.strip()
    if kind == "exact":
        return float(text == str(check["value"]))
    if kind == "contains":
        return float(str(check["value"]) in text)
    if kind == "regex":
        return float(re.search(check["value"], text) is not None)
    if kind == "json_schema":
        try:
            jsonschema.validate(json.loads(text), check["schema"])
        except (ValueError, jsonschema.ValidationError):
            return 0.0
        return 1.0
    raise ValueError(f"unknown check kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Result:
    model: str
    prompt_id: str
    ttft_ms: float | None
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_nusd: int
    score: float
    error: str | None = None


async def _one(
    client: OpenRouterClient, model: str, prompt: dict[str, Any], deadline: float
) -> Result:
    body = {
        "model": model,
        "max_tokens": prompt.get("max_tokens", 100),
        "messages": [{"role": "user", "content": prompt["prompt"]}],
    }
    started = time.perf_counter()
    ttft: float | None = None
    pieces: list[str] = []
    try:
        async with client.stream_chat(body) as stream:
            async for chunk in stream:
                if ttft is None and chunk.text:
                    ttft = (time.perf_counter() - started) * 1000
                pieces.append(chunk.text)
    except UpstreamError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Result(
            model, prompt["id"], ttft, latency, 0, 0, 0, 0.0, f"{type(exc).__name__}: {exc.message}"
        )
    latency = (time.perf_counter() - started) * 1000
    usage = stream.usage
    cost = usage.cost if usage and usage.cost is not None else Decimal(0)
    if stream.generation_id:
        with contextlib.suppress(GenerationNotReady, UpstreamError):  # else the inline cost
            cost = (await client.generation(stream.generation_id, deadline=deadline)).total_cost
    return Result(
        model,
        prompt["id"],
        ttft,
        latency,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        NanoUsd.from_usd(cost, Rounding.UP).value,
        score("".join(pieces), prompt["check"]),
    )


@dataclass(frozen=True, slots=True)
class Summary:
    model: str
    score: float
    ttft_p50_ms: float | None
    latency_p50_ms: float
    tokens: int
    cost_nusd: int
    errors: int
    regressions: tuple[str, ...] = ()


def summarise(model: str, results: Sequence[Result | tuple[Any, ...]]) -> Summary:
    rows = [r if isinstance(r, Result) else Result(*r[2:]) for r in results]
    ttfts = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    return Summary(
        model=model,
        score=statistics.fmean(r.score for r in rows) if rows else 0.0,
        ttft_p50_ms=statistics.median(ttfts) if ttfts else None,
        latency_p50_ms=statistics.median(r.latency_ms for r in rows) if rows else 0.0,
        tokens=sum(r.prompt_tokens + r.completion_tokens for r in rows),
        cost_nusd=sum(r.cost_nusd for r in rows),
        errors=sum(r.error is not None for r in rows),
    )


def regressions(now: Summary, before: Summary | None) -> tuple[str, ...]:
    if before is None:
        return ()
    found = []
    if now.score < before.score - 0.1:
        found.append(f"score {before.score:.2f} -> {now.score:.2f}")
    slower = now.latency_p50_ms - before.latency_p50_ms
    if slower > LATENCY_NOISE_MS and now.latency_p50_ms > before.latency_p50_ms * 1.5:
        found.append(f"latency p50 {before.latency_p50_ms:.0f} -> {now.latency_p50_ms:.0f} ms")
    if before.cost_nusd and now.cost_nusd > before.cost_nusd * 1.5:
        found.append(f"cost {before.cost_nusd} -> {now.cost_nusd} nUSD")
    return tuple(found)


async def run(
    client: OpenRouterClient,
    store: Store,
    models: Sequence[str],
    suite: dict[str, Any],
    *,
    deadline: float = 10.0,
) -> list[Summary]:
    """Run the suite, store the results, and summarise each model against its last run."""
    run_id, at = "bench_" + secrets.token_hex(6), time.time()
    summaries = []
    for model in models:
        async with store.read() as tx:
            history = await tx.bench_results(model)
        previous_run = history[-1][0] if history else None
        before = summarise(model, [r for r in history if r[0] == previous_run]) if history else None
        results = await asyncio.gather(
            *(_one(client, model, p, deadline) for p in suite["prompts"])
        )
        async with store.transaction() as tx:
            await tx.insert_bench_results(
                [
                    (
                        run_id,
                        at,
                        r.model,
                        r.prompt_id,
                        r.ttft_ms,
                        r.latency_ms,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.cost_nusd,
                        r.score,
                        r.error,
                    )
                    for r in results
                ]
            )
        summary = summarise(model, results)
        summaries.append(replace(summary, regressions=regressions(summary, before)))
    return summaries


#: What ``satrouter bench-models`` says when it writes no chart.
NO_CHART = "no chart: matplotlib is not installed (pip install 'satrouter[charts]')"


def report(
    summaries: Sequence[Summary], suite: dict[str, Any], out: Path
) -> tuple[Path, Path | None]:
    """Write ``bench-models.md`` into ``out``, and ``bench-models.png`` when matplotlib (the
    ``charts`` extra) is installed; the chart's path is None without it."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Model benchmark: {suite['name']} ({len(suite['prompts'])} prompts)",
        "",
        "| model | score | TTFT p50 ms | latency p50 ms | tokens | cost USD | errors | regressed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        ttft = f"{s.ttft_p50_ms:.0f}" if s.ttft_p50_ms is not None else "-"
        lines.append(
            f"| {s.model} | {s.score:.2f} | {ttft} | {s.latency_p50_ms:.0f} | {s.tokens} | "
            f"{NanoUsd(s.cost_nusd).to_usd():.6f} | {s.errors} | "
            f"{'; '.join(s.regressions) or '-'} |"
        )
    chart = _chart(summaries, suite, out / "bench-models.png")
    markdown = out / "bench-models.md"
    image = "\n![cost against score](bench-models.png)\n" if chart is not None else ""
    markdown.write_text("\n".join(lines) + "\n" + image)
    return markdown, chart


def _chart(summaries: Sequence[Summary], suite: dict[str, Any], chart: Path) -> Path | None:
    """Cost against score, the marker size showing latency; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for s in summaries:
        cost = float(NanoUsd(s.cost_nusd).to_usd())
        axes.scatter(cost, s.score, s=40 + s.latency_p50_ms / 5, alpha=0.7)
        axes.annotate(
            s.model.split("/")[-1],
            (cost, s.score),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if all(s.cost_nusd > 0 for s in summaries):
        axes.set_xscale("log")  # model prices span orders of magnitude
    axes.set_xlabel("cost of the suite (USD)")
    axes.set_ylabel("score (share of checks passed)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title(f"{suite['name']}: cost against score (marker size: latency)")
    figure.tight_layout()
    figure.savefig(chart, dpi=110)
    plt.close(figure)
    return chart
