"""The terminal: status lines, the live view and serve's run loop (rich).

Between the adapters and the Typer commands: renders what the adapters report.
"""
