"""``make eval-privacy``: the privacy scan on the labelled corpus, precision and recall per kind.

Writes the ``eval-privacy`` section of ``docs/routing.md``. The same figures are checked
against their targets by ``tests/test_privacy.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._report import machine, write_section
from service.routing import privacy_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args()
    result = privacy_evaluation.evaluate()
    report = (
        f"Command: `make eval-privacy` ({machine()}); corpus: "
        "`service/routing/privacy_corpus.jsonl`.\n\n" + privacy_evaluation.report(result)
    )
    print(report)
    if args.write:
        write_section(args.write, "eval-privacy", report)


if __name__ == "__main__":
    main()
