"""The exit-code table and the error types every command raises.

Pure: commands raise a `PstreamError` subclass; the CLI turns it into one line on stderr and the
matching exit code, so no expected error ever shows a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the same for every command (documented in the README)."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFIG = 3
    API_REFUSED = 4
    API_FAILED = 5
    NETWORK = 6
    PROTOCOL = 7
    CHECK_FAILED = 8
    NO_REPLY = 9
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.UNEXPECTED: "unexpected error (a bug: please report it)",
    ExitCode.USAGE: "usage error or bad input (flags, files, URLs)",
    ExitCode.CONFIG: "missing or bad credentials or configuration",
    ExitCode.API_REFUSED: "the Plivo API refused the request (4xx)",
    ExitCode.API_FAILED: "the Plivo API failed (5xx)",
    ExitCode.NETWORK: "network error or timeout",
    ExitCode.PROTOCOL: "the peer violated the streaming protocol",
    ExitCode.CHECK_FAILED: "a check you asked for failed (threshold, signature)",
    ExitCode.NO_REPLY: "the bot never answered (--require-reply) or never cleared a barge-in",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class PstreamError(Exception):
    """An expected failure: its message is shown as one line, its code is the exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(PstreamError):
    """Bad flags, arguments, files or URLs given by the user."""

    exit_code = ExitCode.USAGE


class ConfigError(PstreamError):
    """Missing or bad credentials or configuration."""

    exit_code = ExitCode.CONFIG


class ApiRefusedError(PstreamError):
    """The API answered 4xx."""

    exit_code = ExitCode.API_REFUSED


class ApiFailedError(PstreamError):
    """The API answered 5xx (after retries)."""

    exit_code = ExitCode.API_FAILED


class NetworkError(PstreamError):
    """Connection refused, DNS failure, timeout, tunnel could not start."""

    exit_code = ExitCode.NETWORK


class ProtocolViolation(PstreamError):
    """The peer broke the streaming protocol (used with --strict)."""

    exit_code = ExitCode.PROTOCOL


class CheckFailed(PstreamError):
    """A check the user asked for failed (a latency threshold, an invalid signature)."""

    exit_code = ExitCode.CHECK_FAILED


class NoReply(PstreamError):
    """The bot under test stayed silent: no reply to the caller, or no clear after a barge-in."""

    exit_code = ExitCode.NO_REPLY
