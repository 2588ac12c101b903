"""Shared by the benchmarks in bench/: the errors, logging, the table printer and the virtualenv re-exec."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

MB = 1_000_000  # MB = 10^6 bytes, in every benchmark
REPO = Path(__file__).resolve().parent.parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


class BenchError(Exception):
    """The benchmark cannot go on; main prints the message and exits 1."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def reexec_with_venv(script: str) -> NoReturn:
    """bastion could not be imported: run the script again with the project's virtualenv, once."""
    if VENV_PYTHON.exists() and not os.environ.get("BENCH_REEXEC"):
        os.environ["BENCH_REEXEC"] = "1"
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(script).resolve()), *sys.argv[1:]])
    sys.exit(f"bench: cannot import bastion; run: {VENV_PYTHON} {sys.argv[0]}")


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], left: int = 1) -> None:
    """Columns padded to their widest cell: the first `left` and the last aligned left, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        last = len(row) - 1
        return "  ".join(c.ljust(w) if i < left or i == last else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row).rstrip())
