"""Lets `python -m plivo_stream_cli` run the CLI."""

from __future__ import annotations

from plivo_stream_cli.cli import main

if __name__ == "__main__":
    main()
