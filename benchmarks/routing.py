"""``make eval-routing``: the classifier and ``auto`` routing on the labelled prompt set.

Prices come from the catalog satrouter ships for its emulator (real OpenRouter prices); the
policy is ``SATROUTER_POLICY`` when set, else the built-in one. Writes the ``eval-routing``
section of ``docs/routing.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path

from benchmarks._report import machine, write_section
from billing.pricing import ModelPrice
from service.routing import evaluation, policy
from service.upstream.catalog import Catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    body = json.loads(resources.files("service.emulator").joinpath("catalog.json").read_text())
    catalog = Catalog.from_response(body)

    def price_of(model: str) -> ModelPrice:
        info = catalog.get(model)
        if info is None or info.price is None:
            raise SystemExit(f"{model} has no price in the shipped catalog")
        return info.price

    path = os.environ.get("SATROUTER_POLICY")
    known = catalog.__contains__
    rules = policy.load(Path(path), known) if path else policy.builtin(known)
    try:
        result = evaluation.evaluate(rules, price_of)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    report = (
        f"Command: `make eval-routing` ({machine()}); policy: {path or 'the built-in one'}; "
        "prices: the shipped catalog.\n\n" + evaluation.report(result)
    )
    print(report)
    if args.write:
        write_section(args.write, "eval-routing", report)


if __name__ == "__main__":
    main()
