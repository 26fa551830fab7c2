"""Start-up time of `pstream --help` and of a TAB completion, against `python -c "import typer"`.

    .venv/bin/python benchmarks/startup.py            # --runs 20, --check to exit 1 on a miss

Every case runs in a fresh interpreter, stdout to /dev/null; the cases take turns run after run
so that a burst of load from elsewhere hits them all alike. Reports the median and the fastest
wall time per case. Targets (issue 8): the median of `pstream --help` at most 2x the median of
`import typer`, and at most 150 ms; (issue 22) `pstream xml URL` at most 2x `pstream --help`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
SCRIPT = shutil.which("pstream", path=str(Path(PYTHON).parent)) or "pstream"
TAB = {"_PSTREAM_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "pstream serve --"}
CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    'python -c "pass"': ([PYTHON, "-c", "pass"], {}),
    'python -c "import typer"': ([PYTHON, "-c", "import typer"], {}),
    "python -m plivo_stream_cli --help": ([PYTHON, "-m", "plivo_stream_cli", "--help"], {}),
    "pstream --help": ([SCRIPT, "--help"], {}),
    "pstream serve --help": ([SCRIPT, "serve", "--help"], {}),
    "TAB: pstream serve --": ([SCRIPT], TAB),
    "pstream xml wss://e.com/s": ([SCRIPT, "xml", "wss://example.com/stream"], {}),
}
BASELINE = 'python -c "import typer"'
TARGETS = ("python -m plivo_stream_cli --help", "pstream --help")
MAX_RATIO = 2.0
MAX_MS = 150.0


def measure(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, (command, env) in CASES.items():
            start = time.perf_counter()
            subprocess.run(
                command, stdout=subprocess.DEVNULL, env={**os.environ, **env}, check=True
            )
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    for command, env in CASES.values():  # warm the file cache and the .pyc files first
        subprocess.run(command, stdout=subprocess.DEVNULL, env={**os.environ, **env}, check=True)
    times = measure(args.runs)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians[BASELINE]
    print(f"{'case':<36}{'median':>10}{'fastest':>10}{'vs typer':>10}")
    for name, values in times.items():
        ratio = medians[name] / base
        print(f"{name:<36}{medians[name]:>8.1f}ms{min(values):>8.1f}ms{ratio:>9.2f}x")
    missed = [
        name for name in TARGETS if medians[name] > MAX_MS or medians[name] / base > MAX_RATIO
    ]
    xml_ratio = medians["pstream xml wss://e.com/s"] / medians["pstream --help"]
    print(f"pstream xml / pstream --help: {xml_ratio:.2f}x (target at most {MAX_RATIO:g}x)")
    if xml_ratio > MAX_RATIO:
        missed.append("pstream xml wss://e.com/s")
    for name in missed:
        print(f"target missed: {name} (at most {MAX_RATIO:g}x typer and {MAX_MS:g} ms)")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
