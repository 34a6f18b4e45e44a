"""Seconds from spawning ``geosleuth mcp --offline`` to its answer to ``tools/list`` over stdio
(median of 5): what a desktop assistant waits for when it starts the server on demand.

    python bench/mcp_start.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5


async def once(params: StdioServerParameters) -> float:
    t0 = time.perf_counter()
    async with Client(params) as client:
        tools = await client.list_tools()
        seconds = time.perf_counter() - t0
    assert [t.name for t in tools.tools] == ["locate", "explain", "ask"]
    return seconds


def main() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "geosleuth.cli", "mcp", "--offline"], env=env
    )
    times = [anyio.run(once, params) for _ in range(RUNS)]
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"tools/list after spawn: {shown} s; median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
