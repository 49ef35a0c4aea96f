"""One process against P processes of the JAX multi-process runtime, on the same jobs.

Runs ``python -m jaxadv.experiments.untargeted`` on the shortest demo clip of each of the first
``--classes`` classes, once as one process and once as ``--processes`` processes joined over
``127.0.0.1`` (each on a fresh compilation cache, so both compile everything), and reports the
wall time of each, the jobs each process attacked and whether the rows agree bit for bit. On one
machine the processes share its cores, so this measures the runtime's overhead (start-up,
coordination, every process compiling its own programs), not a speed-up: that needs more hosts.

    PYTHONPATH=. python benchmarks/distributed.py                  # 6 classes, VGG13, 2 processes
    PYTHONPATH=. python benchmarks/distributed.py --classes 12 --models vgg13,dense_mel
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as B  # noqa: E402
import numpy as np  # noqa: E402

FAST = [
    "--set", "cw.max_iterations=20", "--set", "cw.binary_search_steps=2",
    "--set", "deepfool.steps=20", "--set", "fmn.steps=20", "--set", "ddn.steps=20",
]  # fmt: skip


def small_data(root: Path, n_classes: int) -> Path:
    """The shortest embedded clip of each of the first ``n_classes`` classes, FSDKaggle2018 layout."""
    import soundfile as sf

    from jaxadv import config as C
    from jaxadv import demo

    src = demo.data_dir()
    lines = (src / C.TEST_CSV).read_text().splitlines()
    (root / C.TEST_AUDIO_DIR).mkdir(parents=True)
    keep = []
    for cls in C.LABELS[:n_classes]:
        mine = [ln for ln in lines[1:] if ln.split(",")[1] == cls]
        mine.sort(key=lambda ln: sf.info(src / C.TEST_AUDIO_DIR / ln.split(",")[0]).frames)
        keep += mine[:1]
    for ln in keep:
        f = ln.split(",")[0]
        shutil.copy(src / C.TEST_AUDIO_DIR / f, root / C.TEST_AUDIO_DIR / f)
    (root / C.TEST_CSV).write_text("\n".join([lines[0], *keep]) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, name: str, data: Path, models: str, count: int) -> float:
    """Run the command as ``count`` processes (1: a plain run); returns the wall seconds."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    base = [
        sys.executable, "-m", "jaxadv.experiments.untargeted", "--out", str(tmp / name),
        "--data", str(data), "--models", models, "--no-audio", "--cache-dir",
        str(tmp / f"cache-{name}"), *FAST,
    ]  # fmt: skip
    port = free_port()
    t0 = time.perf_counter()
    procs = []
    for i in range(count):
        extra = [] if count == 1 else [
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count),
            "--process-id", str(i),
        ]  # fmt: skip
        log = open(tmp / f"{name}.{i}.log", "w")
        procs.append(subprocess.Popen(base + extra, env=env, stdout=log, stderr=subprocess.STDOUT))
    for i, p in enumerate(procs):
        if p.wait() != 0:
            sys.exit(f"{name} process {i} failed: see {tmp / f'{name}.{i}.log'}")
    return time.perf_counter() - t0


def jobs_per_writer(run: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in sorted((run / "adversarial").glob("part-*.npz")):
        writer = p.name.split("-")[1] if p.name.count("-") == 2 else "p0"
        with np.load(p) as z:
            out[writer] = out.get(writer, 0) + len(z.files)
    return out


def same_rows(a: Path, b: Path) -> bool:
    from jaxadv.experiments import results

    def table(p: Path) -> list:
        rows = results.read_rows(p / "results.csv")
        return sorted(tuple((k, r[k]) for k in results.COLUMNS if k != "seconds") for r in rows)

    return table(a) == table(b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=6, help="classes (one clip each)")
    p.add_argument("--models", default="vgg13")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    args = p.parse_args()
    machine = B.machine_info()
    B.print_machine(machine)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = small_data(tmp / "data", args.classes)
        one = launch(tmp, "one", data, args.models, 1)
        many = launch(tmp, "many", data, args.models, args.processes)
        rows = [
            {"run": "1 process", "wall s": round(one, 1), "jobs": jobs_per_writer(tmp / "one")},
            {
                "run": f"{args.processes} processes",
                "wall s": round(many, 1),
                "jobs": jobs_per_writer(tmp / "many"),
            },
        ]
        same = same_rows(tmp / "one", tmp / "many")
    B.print_table(rows, ["run", "wall s", "jobs"])
    print(f"\nwall ratio {many / one:.2f}x; rows identical: {same}")
    results = {"rows": rows, "ratio": many / one, "same_rows": same}
    print("record:", B.write_record("distributed", args, machine, results, args.out))


if __name__ == "__main__":
    main()
