"""Generate the LND gRPC stubs in ``billing/lightning/lndrpc`` from ``proto/`` (``make proto``).

protoc writes ``import lightning_pb2``; the stubs live in a package, so imports are rewritten to
relative ones. ``generate()`` is also what the test uses to prove the committed stubs match the
sources.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_DIR = Path(__file__).resolve().parent / "lndrpc"
SOURCES = ("lightning.proto", "router.proto", "invoices.proto")


def generate(out: Path) -> list[Path]:
    """Run protoc on the sources into ``out``; the generated files."""
    from grpc_tools import protoc  # a build-time tool: only `make proto` and its test need it

    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_DIR / s) for s in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    files = sorted(p for p in out.iterdir() if p.suffix in (".py", ".pyi"))
    for path in files:
        text = re.sub(
            r"^import (\w+_pb2)( as \w+)?$", r"from . import \1\2", path.read_text(), flags=re.M
        )
        path.write_text(text)
    (out / "__init__.py").write_text(
        '"""LND gRPC stubs generated from proto/ by `make proto`."""\n'
    )
    return [*files, out / "__init__.py"]


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            (OUT_DIR / path.name).write_text(path.read_text())
    print(f"generated stubs in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
