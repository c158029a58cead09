"""``make demo``: a scripted session against OpenRouter (or its emulator) through the real client.

With ``OPENROUTER_API_KEY`` unset, the emulator is started in-process on a free loopback port.
"""

from __future__ import annotations

import logging
import os
import time
from decimal import Decimal

from aiohttp import web

from .emulator.app import DEFAULT_API_KEY, DEFAULT_MANAGEMENT_KEY, STATE, EmulatorConfig, create_app
from .emulator.faults import Fault
from .upstream.catalog import Catalog
from .upstream.errors import UpstreamError
from .upstream.openrouter import OpenRouterClient

CHEAP = "meta-llama/llama-3.1-8b-instruct"
BACKUP = "openai/gpt-4o-mini"


def _usd(amount: Decimal | None) -> str:
    return "n/a" if amount is None else f"${amount:.9f}"


async def run_demo() -> int:
    for noisy in ("httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    real_key = os.environ.get("OPENROUTER_API_KEY")
    runner: web.AppRunner | None = None
    app = None
    if real_key:
        base_url = os.environ.get("OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1")
        api_key, management_key = real_key, os.environ.get("OPENROUTER_MANAGEMENT_KEY")
        print(f"satrouter demo against {base_url}")
    else:
        app = create_app(EmulatorConfig(generation_delay=0.5))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}/api/v1"
        api_key, management_key = DEFAULT_API_KEY, DEFAULT_MANAGEMENT_KEY
        print(f"satrouter demo against the OpenRouter emulator at {base_url}")
    try:
        async with OpenRouterClient(
            base_url=base_url,
            api_key=api_key,
            management_key=management_key,
            title="satrouter demo",
        ) as client:
            catalog = Catalog.from_response(await client.models())
            priced = [m for m in catalog if m.price is not None]
            cheapest = min(priced, key=lambda m: m.price.cost(1000, 1000) if m.price else 0)
            print(
                f"\n1. models: {len(catalog)} in the catalog, {len(catalog) - len(priced)} with "
                f"variable price (never quoted); cheapest for 1k+1k tokens: {cheapest.id}"
            )

            question = {
                "role": "user",
                "content": "In one sentence: why pay per task over Lightning?",
            }
            result = await client.chat({"model": CHEAP, "messages": [question], "max_tokens": 40})
            usage = result.usage
            print(f"\n2. chat on {result.completion.model}: {result.completion.text!r}")
            if usage:
                print(
                    f"   usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} "
                    f"completion tokens, inline cost {_usd(usage.cost)}"
                )

            pieces: list[str] = []
            async with client.stream_chat(
                {"model": CHEAP, "messages": [question], "max_tokens": 20}
            ) as stream:
                async for chunk in stream:
                    pieces.append(chunk.text)
            print(f"\n3. stream: {len(pieces)} chunks -> {''.join(pieces)!r}")
            if stream.usage:
                print(
                    f"   final usage chunk: {stream.usage.completion_tokens} tokens, "
                    f"cost {_usd(stream.usage.cost)}"
                )

            started = time.monotonic()
            generation = await client.generation(result.generation_id, deadline=30)
            print(
                f"\n4. /generation {generation.id}: total_cost {_usd(generation.total_cost)} "
                f"(found after {time.monotonic() - started:.2f} s of polling)"
            )

            if app is not None:
                app[STATE].faults.set(CHEAP, Fault(kind="rate_limit", retry_after=2))
                try:
                    await client.chat({"model": CHEAP, "messages": [question], "max_tokens": 10})
                except UpstreamError as exc:
                    print(
                        f"\n5. injected 429 on {CHEAP}: {type(exc).__name__}, "
                        f"retry after {exc.retry_after} s, fallback ok: {exc.fallback_ok}"
                    )
                fallback = await client.chat(
                    {"models": [CHEAP, BACKUP], "messages": [question], "max_tokens": 10}
                )
                print(f"   with models=[{CHEAP}, {BACKUP}] it ran on {fallback.completion.model}")
                app[STATE].faults.clear()

            key = await client.key()
            print(f"\n6. /key: usage {_usd(key.usage)}")
            try:
                credits = await client.credits()
                print(
                    f"   /credits: balance {_usd(credits.balance)} of {_usd(credits.total_credits)}"
                )
            except UpstreamError as exc:
                print(f"   /credits: {exc.message}")
    finally:
        if runner is not None:
            await runner.cleanup()
    print("\ndemo finished")
    return 0
