"""The README's first command (the targeted demo), on an empty and then a warm compilation cache.

Runs ``python -m jaxadv.experiments.targeted`` twice in fresh processes with the same new
compilation-cache folder (``--cache-dir``) and new run folders: the first run compiles every
program and stores it, the second should find every program in the cache. Each child process
records JAX's compile-time events (``jax.monitoring``):

* ``trace``: Python tracing to a jaxpr (``/jax/core/compile/jaxpr_trace_duration``);
* ``lower``: jaxpr to an MLIR module (``jaxpr_to_mlir_module_duration``);
* ``compile``: XLA backend compilation (``backend_compile_duration``; a cache hit records none);
* ``cache read``: reading a program from the persistent cache (``cache_retrieval_time_sec``).

``compile share`` = (trace + lower + compile + cache read) / wall time: the part of the run that is
not attacking. Target of issue 16: the warm run spends at most 5 % of its time compiling.

    PYTHONPATH=. python benchmarks/first_command.py                # 2 runs of the first command
    PYTHONPATH=. python benchmarks/first_command.py -- --models vgg13 --per-class 1   # smaller
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as B  # noqa: E402

EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache read",
}


def child(argv: list[str], report: Path) -> None:
    """Run the targeted command in this process, recording the compile events into ``report``."""
    import jax

    totals = dict.fromkeys(EVENTS.values(), 0.0)
    counts = dict.fromkeys(EVENTS.values(), 0)

    def on(event: str, secs: float, **kw) -> None:
        if event in EVENTS:
            totals[EVENTS[event]] += secs
            counts[EVENTS[event]] += 1

    jax.monitoring.register_event_duration_secs_listener(on)
    from jaxadv.experiments import targeted

    t0 = time.perf_counter()
    targeted.main(argv)
    wall = time.perf_counter() - t0
    report.write_text(json.dumps({"wall_s": wall, "seconds": totals, "events": counts}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--keep", type=Path, default=None, help="keep the run and cache folders here")
    p.add_argument("--out", default=None, help="JSON file the record is appended to")
    p.add_argument("extra", nargs="*", help="after --: flags passed to the targeted command")
    args = p.parse_args(argv)
    if args.child:
        child(args.extra, Path(args.child))
        return

    info = B.machine_info()
    base = args.keep or Path(tempfile.mkdtemp(prefix="jaxadv-first-"))
    base.mkdir(parents=True, exist_ok=True)
    cache = base / "cache"
    rows = []
    for name in ("empty cache", "warm cache"):
        report = base / f"{name.replace(' ', '_')}.json"
        run_dir = base / f"run_{name.split()[0]}"
        cmd = [sys.executable, __file__, "--child", str(report), "--",
               "--out", str(run_dir), "--cache-dir", str(cache), *args.extra]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        process = time.perf_counter() - t0
        r = json.loads(report.read_text())
        s = r["seconds"]
        spent = sum(s.values())
        rows.append(
            {
                "run": name,
                "process s": process,
                "command s": r["wall_s"],
                **{f"{k} s": v for k, v in s.items()},
                "compile share": spent / r["wall_s"],
                "programs compiled": r["events"]["compile"],
            }
        )
    B.print_machine(info)
    B.print_table(
        rows,
        ["run", "process s", "command s", "trace s", "lower s", "compile s", "cache read s",
         "compile share", "programs compiled"],
    )  # fmt: skip
    args.keep = None if args.keep is None else str(args.keep)  # JSON-serialisable record
    print("\nrecord:", B.write_record("first_command", args, info, rows, args.out))


if __name__ == "__main__":
    main()
