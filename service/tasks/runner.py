"""Running a paid call: whole or streamed, on OpenRouter or (for a prompt that must stay
local, and as the last resort of a tier whose cloud models all failed) on the local endpoint;
a consensus of several models; a cascade of draft, check and escalation. Each run ends in
:mod:`service.tasks.outcomes`: completed, or failed and refunded."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from billing.store import TaskRow

from ..routing import cascade, consensus
from ..routing.breaker import BreakerState
from ..routing.fallback import AllModelsFailed, Attempt, FallbackRunner
from ..upstream.errors import UpstreamError
from ..upstream.openrouter import ChatResult
from ..upstream.schemas import plain
from .context import Context
from .outcomes import Outcomes, call_record
from .record import record_of

log = logging.getLogger(__name__)

_Run = TypeVar("_Run", bound=tuple[Any, ...])  # a runner's outcome, its attempts last


@dataclass(frozen=True, slots=True)
class Ran:
    """A call's outcome: the task afterwards, and the answer to pass on (None: every model
    failed and the task was refunded)."""

    task: TaskRow
    answer: dict[str, Any] | None


class Runner:
    def __init__(self, ctx: Context, outcomes: Outcomes) -> None:
        self._ctx = ctx
        self._outcomes = outcomes

    async def run(self, task: TaskRow) -> Ran:
        """Run a ``running`` task's call whole and record the outcome."""
        hooks = self._ctx.hooks
        record = record_of(task)
        if record.kind == "invoice" and hooks.dispatched is not None:
            hooks.dispatched(task.id)
        request = record.request
        if request.get("consensus"):
            return await self._consensus(task)
        if request.get("cascade"):
            return await self._cascade(task)
        started = time.perf_counter()
        try:
            (result, attempts), ran_locally = await self._call(task, FallbackRunner.chat)
        except AllModelsFailed as exc:
            self._observe_upstream(request["model"], "error", started)
            self.observe_breakers()
            log.info("%s failed upstream: %s", task.id, exc)
            last = exc.last
            error = f"{type(last).__name__}: {last.message}" if last else str(exc)
            return Ran(await self._outcomes.fail(task, error, attempts=exc.attempts), None)
        seconds = self._observe_upstream(result.completion.model, "ok", started)
        self.observe_breakers()
        done = await self._outcomes.complete(
            task,
            result,
            upstream_seconds=seconds,
            attempts=attempts,
            extra={"ran_locally": True} if ran_locally else None,
        )
        return Ran(done, plain(result.raw))

    async def stream(self, task: TaskRow) -> AsyncIterator[str] | None:
        """Open the task's call as a stream: the events to send (each an SSE ``data``), or
        None when every model failed before the first token (the task is then refunded).
        However the iteration ends (finished, cut off by an upstream error, or closed because
        the caller left) what ran is recorded and billed."""
        started = time.perf_counter()
        try:
            (stream, chunks, first, attempts), ran_locally = await self._call(
                task, FallbackRunner.stream
            )
        except AllModelsFailed as exc:
            self.observe_breakers()
            await self._outcomes.fail(task, str(exc), attempts=exc.attempts)
            return None
        self.observe_breakers()
        metrics = self._ctx.metrics

        async def events() -> AsyncIterator[str]:
            try:
                if metrics is not None:
                    metrics.ttft_seconds.labels(stream.model or first.model or "-").observe(
                        time.perf_counter() - started
                    )
                yield stream.last_raw
                try:
                    async for _ in chunks:
                        yield stream.last_raw
                    yield "[DONE]"
                except UpstreamError as exc:
                    # After the first bytes the caller is told honestly; what ran is billed.
                    error = {
                        "error": {"code": exc.code, "message": exc.message},
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
                    }
                    yield json.dumps(error)
            finally:
                stream.aclose()
                await self._outcomes.complete(
                    task,
                    None,
                    usage=stream.usage,
                    model=stream.model,
                    generation_id=stream.generation_id,
                    attempts=attempts,
                    extra={"ran_locally": True} if ran_locally else None,
                )

        return events()

    async def _consensus(self, task: TaskRow) -> Ran:
        """Every model at once; the majority answer, with the agreement, is the result."""
        outcome = await consensus.run(self._ctx.runner, record_of(task).request["consensus"])
        return await self._several(
            task,
            "consensus",
            outcome.majority,
            outcome.answered,
            outcome.attempts,
            outcome.report,
            "every model of the consensus failed",
        )

    async def _cascade(self, task: TaskRow) -> Ran:
        """Draft, check, escalate (see :mod:`service.routing.cascade`)."""
        outcome = await cascade.run(self._runner_for(task), record_of(task).request["cascade"])
        return await self._several(
            task,
            "cascade",
            outcome.answer,
            outcome.calls,
            outcome.attempts,
            outcome.report,
            "every step of the cascade failed",
        )

    async def _several(
        self,
        task: TaskRow,
        mode: str,
        chosen: ChatResult | None,
        calls: list[ChatResult],
        attempts: list[Attempt],
        report: Callable[[], dict[str, Any]],
        failure: str,
    ) -> Ran:
        """Record a request that made several calls: the chosen answer with the ``mode``'s
        report, and every call that ran, each to be reconciled and paid for."""
        self.observe_breakers()
        if chosen is None:
            return Ran(await self._outcomes.fail(task, failure, attempts=attempts), None)
        details = report()
        answer = {**plain(chosen.raw), mode: details}
        done = await self._outcomes.complete(
            task,
            chosen,
            attempts=attempts,
            extra={mode: details, "calls": [call_record(c) for c in calls]},
            answer=answer,
        )
        return Ran(done, answer)

    async def _call(
        self,
        task: TaskRow,
        run: Callable[[FallbackRunner, dict[str, Any]], Awaitable[_Run]],
    ) -> tuple[_Run, bool]:
        """``run`` the task's request on its runner; if every cloud model failed with an error
        another model may cure and the task has a last resort, once more on the local models.
        Returns the outcome (its attempts include the cloud's) and whether it ran locally."""
        try:
            return await run(self._runner_for(task), record_of(task).request), False
        except AllModelsFailed as exc:
            chain = record_of(task).last_resort
            last = exc.last
            curable = last is None or last.retryable or last.fallback_ok
            local = self._ctx.local_runner
            if not chain or local is None or not curable:
                raise
            log.info("%s: every cloud model failed; trying the local last resort", task.id)
            request = {
                **{k: v for k, v in record_of(task).request.items() if k != "provider"},
                "model": chain[0],
                "models": list(chain),
            }
            try:
                outcome = await run(local, request)
            except AllModelsFailed as again:
                attempts = [*exc.attempts, *again.attempts]
                raise AllModelsFailed(str(again), attempts, again.last) from None
            outcome[-1][:0] = exc.attempts  # the local run's attempts, after the cloud's
            return outcome, True

    def _runner_for(self, task: TaskRow) -> FallbackRunner:
        """The local endpoint for a prompt that must stay local; OpenRouter otherwise."""
        if record_of(task).decision.local:
            assert self._ctx.local_runner is not None, "routed locally without a local endpoint"
            return self._ctx.local_runner
        return self._ctx.runner

    def observe_breakers(self) -> None:
        metrics = self._ctx.metrics
        if metrics is None:
            return
        level = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}
        for model, state in self._ctx.runner.breakers.states().items():
            metrics.breaker_open.labels(model).set(level[state])

    def _observe_upstream(self, model: str, outcome: str, started: float) -> float:
        seconds = time.perf_counter() - started
        if self._ctx.metrics is not None:
            self._ctx.metrics.upstream_seconds.labels(model, outcome).observe(seconds)
        return seconds
