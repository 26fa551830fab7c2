"""Write completions/ (bash, zsh and fish scripts for `pstream`) from the Typer app.

    python scripts/gen_completions.py           # (re)write the files
    python scripts/gen_completions.py --check   # exit 1 and name the stale files, write nothing

tests/test_completions.py runs the check, so the committed scripts never drift from the app.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plivo_stream_cli.commands import shellcomplete as completion

DIRECTORY = Path(__file__).resolve().parent.parent / "completions"


def stale(directory: Path, scripts: dict[str, str]) -> list[Path]:
    """The files under `directory` that are missing or differ from `scripts`."""
    paths = [directory / name for name in scripts]
    return [p for p in paths if not p.is_file() or p.read_text("utf-8") != scripts[p.name]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    parser.add_argument("--dir", type=Path, default=DIRECTORY, help="where the files live")
    args = parser.parse_args(argv)
    scripts = completion.generate()
    outdated = stale(args.dir, scripts)
    if args.check:
        for path in outdated:
            print(f"stale: {path} (run python scripts/gen_completions.py)", file=sys.stderr)
        return 1 if outdated else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for path in outdated:
        path.write_text(scripts[path.name], "utf-8", newline="\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
