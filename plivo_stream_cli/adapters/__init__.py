"""I/O adapters over the pure core in the package root.

The asyncio stream server and its pieces, the simulated caller, the control channel, recordings,
audio files, the REST client, the tunnel and the `--workers` processes. Nothing here imports
Typer or rich: what the user sees is the console layer's job.
"""
