"""The ``satrouter`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

from aiohttp import web

from . import logs
from .config import ConfigError, load_settings


def _emulator(args: argparse.Namespace) -> int:
    from .emulator.app import STATE, EmulatorConfig, create_app
    from .emulator.faults import parse_fault

    config = EmulatorConfig(
        generation_delay=args.generation_delay,
        ttft=args.ttft,
        tokens_per_second=args.tokens_per_second,
        credits=Decimal(args.credits),
        seed=args.seed,
    )
    app = create_app(config)
    try:
        faults = [parse_fault(spec) for spec in args.fault]
    except ValueError as exc:
        print(f"satrouter emulator: {exc}", file=sys.stderr)
        return 2
    for model, fault in faults:
        app[STATE].faults.set(model, fault)
    print(
        f"OpenRouter emulator on http://{args.host}:{args.port}/api/v1 "
        f"(local models on /local/v1, control on /_emulator)",
        flush=True,
    )
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


MAX_WORKERS = 64


def _workers(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_WORKERS}")
    return count


def _serve(args: argparse.Namespace) -> int:
    from .app import create_app

    settings = load_settings()
    if args.workers > 1:
        if not settings.database_url.startswith(("postgresql://", "postgres://")):
            print(
                f"satrouter serve: --workers {args.workers} needs PostgreSQL "
                "(SATROUTER_DATABASE_URL=postgresql://...): a SQLite database is served by one "
                "process; run one worker, or move to PostgreSQL (docs/operator.md)",
                file=sys.stderr,
            )
            return 2
        if settings.port == 0:
            print(
                "satrouter serve: --workers needs a fixed SATROUTER_PORT (0 would give each "
                "worker a port of its own)",
                file=sys.stderr,
            )
            return 2
        if settings.metrics_port and settings.metrics_port + args.workers - 1 > 65535:
            print(
                f"satrouter serve: worker k serves /metrics on SATROUTER_METRICS_PORT + k; "
                f"{settings.metrics_port} + {args.workers - 1} is past 65535",
                file=sys.stderr,
            )
            return 2
        from .workers import supervise

        print(
            f"satrouter on http://{settings.host}:{settings.port} ({args.workers} workers)",
            flush=True,
        )
        return supervise(args.workers, _serve_worker, args.verbose)
    print(f"satrouter on http://{settings.host}:{settings.port}", flush=True)
    # Each request gets one line from service.http.request_ids (with its id), not aiohttp's.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
    )
    return 0


def _serve_worker(index: int, verbose: bool) -> None:
    """One of ``serve --workers``' processes: a full replica on the shared port."""
    from .app import create_app
    from .workers import run_worker

    settings = load_settings()
    logs.configure(settings.log_format, logging.DEBUG if verbose else logging.INFO)
    if settings.metrics_port:
        # Each process counts its own requests: worker k serves them on the metrics port + k.
        settings = settings.model_copy(update={"metrics_port": settings.metrics_port + index})
    run_worker(create_app(settings), settings.host, settings.port)


def _migrate(args: argparse.Namespace) -> int:
    from billing.store import StoreError, open_store

    settings = load_settings()

    async def run() -> None:
        store = await open_store(settings.database_url)  # opening migrates
        await store.close()

    try:
        asyncio.run(run())
    except StoreError as exc:
        print(f"satrouter migrate: {exc}", file=sys.stderr)
        return 1
    print("database schema up to date")
    return 0


def _margins(args: argparse.Namespace) -> int:
    import json

    from billing.margins import margins, parse_since, to_csv, to_table
    from billing.store import open_store

    from .http.admin import MARGIN_STATES

    settings = load_settings()
    try:
        since, until = parse_since(args.since), parse_since(args.until)
    except ValueError as exc:
        print(f"satrouter margins: {exc}", file=sys.stderr)
        return 2

    async def read() -> list[Any]:
        store = await open_store(settings.database_url)
        try:
            async with store.read() as tx:
                return await tx.tasks_updated_between(since, until, MARGIN_STATES)
        finally:
            await store.close()

    rows = margins(asyncio.run(read()), args.group_by)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    elif args.csv:
        print(to_csv(rows), end="")
    else:
        print(to_table(rows, args.group_by) if rows else "no reconciled tasks in that range")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import json

    from billing import audit
    from billing.store import open_store

    settings = load_settings()

    async def run() -> int:
        store = await open_store(settings.database_url)
        try:
            if args.action == "verify":
                result = await audit.verify(store)
                if result.ok:
                    print(f"audit trail intact: {result.entries} entries")
                    return 0
                print(
                    f"audit trail BROKEN at entry {result.first_bad}: {result.reason}",
                    file=sys.stderr,
                )
                return 1
            # A CLI: nothing else runs on this loop, so a blocking file is fine.
            out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115, ASYNC230
            try:
                async for entry in audit.entries(store):
                    out.write(json.dumps(entry.as_dict(), sort_keys=True) + "\n")
            finally:
                if out is not sys.stdout:
                    out.close()
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def _backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from billing.store.backup import BackupError, backup, database_path, restore

    settings = load_settings()
    try:
        database = database_path(settings.database_url)
        if args.command == "backup":
            done = backup(database, Path(args.path))
            print(
                f"backed up {database} to {done.path} (schema {done.schema_version}, "
                f"{done.size} bytes, integrity ok)"
            )
        else:
            done = restore(Path(args.path), database, replace=args.replace)
            print(
                f"restored {args.path} into {done.path} (schema {done.schema_version}, "
                "integrity ok); the ledger check runs when the service starts, or now with "
                "GET /admin/status"
            )
    except BackupError as exc:
        print(f"satrouter {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _copy_db(args: argparse.Namespace) -> int:
    try:
        from billing.store.copy import CopyError, copy_db
    except ImportError:  # asyncpg is the optional [postgres] extra
        print(
            "satrouter copy-db: needs the PostgreSQL driver: pip install 'satrouter[postgres]'",
            file=sys.stderr,
        )
        return 1
    try:
        copied = asyncio.run(copy_db(args.source, args.target))
    except CopyError as exc:
        print(f"satrouter copy-db: {exc}", file=sys.stderr)
        return 1
    print(copied.report())
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from billing.store import open_store

    from .bench.models import NO_CHART, load_suite, report, run
    from .demo.loopback import serve
    from .emulator.app import DEFAULT_API_KEY, EmulatorConfig
    from .emulator.app import create_app as create_emulator
    from .upstream.openrouter import OpenRouterClient

    settings = load_settings()
    suite = load_suite(Path(args.suite) if args.suite else None)
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    async def main() -> int:
        runner = None
        key: str | None
        if settings.openrouter_api_key is None and not os.environ.get("OPENROUTER_BASE_URL"):
            runner, url = await serve(create_emulator(EmulatorConfig(generation_delay=0.1)))
            base, key = url + "/api/v1", DEFAULT_API_KEY
            print(f"against the OpenRouter emulator at {base}")
        else:
            secret = settings.openrouter_api_key
            base, key = settings.openrouter_base_url, secret.get_secret_value() if secret else None
        store = await open_store(settings.database_url)
        try:
            async with OpenRouterClient(base_url=base, api_key=key) as client:
                summaries = await run(client, store, models, suite)
        finally:
            await store.close()
            if runner is not None:
                await runner.cleanup()
        markdown, chart = report(summaries, suite, Path(args.out))
        print(markdown.read_text())
        if chart is None:
            print(f"wrote {markdown}; {NO_CHART}")
        else:
            print(f"wrote {markdown} and {chart}")
        return 0

    return asyncio.run(main())


def _cashu(args: argparse.Namespace) -> int:
    import aiohttp

    from billing.store import open_store

    from .app import _lightning, ecash_wallet
    from .ecash.treasury import MeltFailed, holdings, melt

    settings = load_settings()
    wallet = ecash_wallet(settings)
    if wallet is None:
        print("satrouter cashu: no mint is allowed (SATROUTER_CASHU_MINTS)", file=sys.stderr)
        return 2

    async def run() -> int:
        store = await open_store(settings.database_url)
        try:
            if args.action == "balance":
                mismatched = 0
                for held in await holdings(store, wallet):
                    world = "unknown" if held.wallet_msat is None else f"{held.wallet_msat}"
                    print(f"{held.mint}: books {held.books_msat} msat, proofs held {world} msat")
                    mismatched += not held.matches
                return 1 if mismatched else 0
            async with aiohttp.ClientSession() as session:
                backend = _lightning(settings, session, store)
                try:
                    done = await melt(
                        store, backend, wallet, args.mint, args.amount_sat, settle_wait=args.wait
                    )
                except MeltFailed as exc:
                    print(f"satrouter cashu melt: {exc}", file=sys.stderr)
                    return 1
                finally:
                    await backend.close()
            print(
                f"melted {done.amount_msat} msat into the wallet (payment {done.payment_hash}); "
                f"the mint's fee: {done.fee_msat} msat"
            )
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo())


def _announce(args: argparse.Namespace) -> int:
    from .announce import command

    return command(args, load_settings())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="satrouter", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("emulator", help="serve the offline OpenRouter emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8090)
    emulator.add_argument(
        "--generation-delay",
        type=float,
        default=1.0,
        help="seconds /generation answers 404 after a completion",
    )
    emulator.add_argument("--ttft", type=float, default=0.0, help="seconds to first token")
    emulator.add_argument("--tokens-per-second", type=float, default=0.0, help="0: instant")
    emulator.add_argument("--credits", default="100", help="OpenRouter credits, USD")
    emulator.add_argument("--seed", type=int, default=0, help="seed for fault rates")
    emulator.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="MODEL=KIND[:RATE]",
        help="inject a fault (repeatable), e.g. openai/gpt-4o=rate_limit:0.5",
    )
    emulator.set_defaults(run=_emulator)

    serve = commands.add_parser("serve", help="run the satrouter service")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="processes sharing the port, each a full replica (N > 1 needs PostgreSQL)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate", help="bring the database schema up to date, then exit (before replicas start)"
    )
    migrate.set_defaults(run=_migrate)

    margins = commands.add_parser("margins", help="revenue, cost and margin from the database")
    margins.add_argument("--since", help="2026-11-20, an ISO time, or 24h / 7d")
    margins.add_argument("--until", help="same forms as --since")
    margins.add_argument(
        "--group-by",
        default="model",
        choices=("model", "agent", "class", "tier", "day", "hour", "total"),
    )
    output = margins.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    margins.set_defaults(run=_margins)

    audit = commands.add_parser("audit", help="check or export the hash-chained audit trail")
    audit.add_argument("action", choices=("verify", "export"))
    audit.add_argument("--output", help="export: write JSON Lines here instead of stdout")
    audit.set_defaults(run=_audit)

    backup = commands.add_parser(
        "backup", help="copy the database, consistently, while the service runs"
    )
    backup.add_argument("path", help="the new file to write")
    backup.set_defaults(run=_backup)
    restore = commands.add_parser(
        "restore", help="put a backup in place of the database (the service stopped)"
    )
    restore.add_argument("path", help="a file written by satrouter backup")
    restore.add_argument("--replace", action="store_true", help="overwrite the existing database")
    restore.set_defaults(run=_backup)

    copy_db = commands.add_parser(
        "copy-db",
        help="copy a SQLite database into a new PostgreSQL one (the service stopped), checked",
    )
    copy_db.add_argument("source", help="sqlite:///path/to/satrouter.db")
    copy_db.add_argument("target", help="postgresql://user@host/database (empty)")
    copy_db.set_defaults(run=_copy_db)

    bench = commands.add_parser("bench-models", help="run the prompt suite across models")
    bench.add_argument("--models", required=True, help="comma-separated model ids")
    bench.add_argument("--suite", help="a suite JSON file (default: the shipped suite)")
    bench.add_argument("--out", default="build/bench", help="where the report goes")
    bench.set_defaults(run=_bench_models)

    cashu = commands.add_parser("cashu", help="the operator's Cashu ecash")
    cashu_actions = cashu.add_subparsers(dest="action", required=True)
    cashu_actions.add_parser("balance", help="ecash in the books against the proofs held")
    cashu_melt = cashu_actions.add_parser(
        "melt", help="pay the operator's own Lightning wallet from the proofs held at a mint"
    )
    cashu_melt.add_argument("--mint", required=True, help="the mint's URL")
    cashu_melt.add_argument("--amount-sat", type=int, required=True)
    cashu_melt.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the wallet to be paid"
    )
    cashu.set_defaults(run=_cashu)

    demo = commands.add_parser("demo", help="run the scripted demo on embedded defaults")
    demo.set_defaults(run=_demo)

    announce = commands.add_parser(
        "announce", help="sign a Nostr kind 38421 provider announcement (SATROUTER_NOSTR_KEY)"
    )
    announce.add_argument("--url", help="the public URL (default: SATROUTER_PUBLIC_URL)")
    announce.add_argument("--card-from", help="read the agent card here instead of at --url")
    announce.add_argument("--also-url", action="append", default=[], help="another URL (u tag)")
    announce.add_argument(
        "--mint",
        action="append",
        default=[],
        help="a Cashu mint URL taken (default: SATROUTER_CASHU_MINTS)",
    )
    announce.add_argument("--id", help="the d tag (default: the URL's host)")
    announce.add_argument(
        "--relay", action="append", default=[], help="wss://... to publish to (none: print)"
    )
    announce.set_defaults(run=_announce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    # The settings' own warnings come before the settings: use the environment's format for them.
    json_env = os.environ.get("SATROUTER_LOG_FORMAT", "").strip().lower() == "json"
    early: Literal["text", "json"] = "json" if json_env else "text"
    logs.configure(early, level)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"satrouter: {exc}", file=sys.stderr)
        return 2
    if settings.log_format != early:
        logs.configure(settings.log_format, level)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
