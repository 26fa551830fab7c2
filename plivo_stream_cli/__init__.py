"""pstream: develop, test and debug Plivo Audio Streaming apps from the terminal."""

from __future__ import annotations

__version__ = "0.1.0"
