"""The CLI's commands, one module each; every module exposes `register(app)`.

Modules here import only typer and the standard library at top level: heavy imports happen inside
the command bodies.
"""

from __future__ import annotations

from types import ModuleType

from plivo_stream_cli.commands import (
    call_cmd,
    completion_cmd,
    control_cmd,
    demo_cmd,
    load_cmd,
    replay_cmd,
    report_cmd,
    rest_cmd,
    serve_cmd,
    signature_cmd,
    simulate_cmd,
    xml_cmd,
)

COMMAND_MODULES: tuple[ModuleType, ...] = (
    xml_cmd,
    signature_cmd,
    rest_cmd,
    serve_cmd,
    simulate_cmd,
    load_cmd,
    control_cmd,
    replay_cmd,
    report_cmd,
    demo_cmd,
    call_cmd,
    completion_cmd,
)
