"""Shared helpers of the benchmark scripts: machine description, interleaved timing, results.

Every script prints a table and appends one record (its arguments, the machine and the numbers)
to a JSON list, ``benchmarks/results/<script>.json`` by default (``--out``). Timing rules: warm-up
call first (compilation excluded), every call blocked until ready, the compared calls interleaved
round by round (a shared machine's load changes hit all of them alike), medians reported.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax

from jaxadv.machine import cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (CPU, cores, JAX, device, load, conv VJP mode)."""
    import jaxlib

    from jaxadv.models import _layers

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "conv_vjp": _layers.conv_vjp_mode(),
        "load_average_start": load_average(),
    }


def block(f: Callable[[], Any]) -> Callable[[], Any]:
    """``f`` followed by ``jax.block_until_ready`` of its result (host values pass through)."""

    def run() -> Any:
        return jax.block_until_ready(f())

    return run


def timed(f: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one blocked call of ``f`` and its result."""
    t = time.perf_counter()
    out = jax.block_until_ready(f())
    return time.perf_counter() - t, out


def interleaved(
    calls: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: bool = True
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """Time ``calls`` round by round; returns (medians, all times, last results) in seconds."""
    results: dict[str, Any] = {}
    if warmup:
        for name, f in calls.items():
            results[name] = jax.block_until_ready(f())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, f in calls.items():
            t, results[name] = timed(f)
            times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}, times, results


def write_record(script: str, args: Any, machine: dict[str, Any], results: Any, out: str | None):
    """Append ``{script, args, machine, results}`` to the JSON list at ``out`` (or the default)."""
    path = Path(out) if out else RESULTS_DIR / f"{script}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(path.read_text()) if path.is_file() else []
    machine = {**machine, "load_average_end": load_average()}
    records.append({"script": script, "args": vars(args), "machine": machine, "results": results})
    path.write_text(json.dumps(records, indent=1, default=float) + "\n")
    return path


def print_machine(machine: dict[str, Any]) -> None:
    print(
        f"# {machine['cpu']}, {machine['cores']} cores, jax {machine['jax']}, "
        f"{machine['device']}, conv VJP {machine['conv_vjp']}, load {machine['load_average_start']}"
    )


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A Markdown table of ``rows`` (floats with 3 significant decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")


def add_common_args(p: Any) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed calls of each (interleaved)")
    p.add_argument("--out", default=None, help="JSON file the record is appended to")
    p.add_argument(
        "--conv-vjp",
        choices=("auto", "flipped", "native"),
        default="auto",
        help="input-gradient convolution (jaxadv.models._layers.set_conv_vjp)",
    )


def apply_conv_vjp(mode: str) -> None:
    from jaxadv.models import _layers

    _layers.set_conv_vjp(mode)
