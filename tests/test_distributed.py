"""Sweeps over several processes: each job owned by exactly one process (also after the number of
processes changes), per-process result shards merged without loss or repeats, per-process
waveform parts, and two real processes of the JAX multi-process runtime on one machine (CPU)
giving the same rows as one process, also after one of them was killed mid-run."""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxadv.experiments import arrays, cluster, results, untargeted
from jaxadv.experiments import sweep as S
from tests.test_experiments import FAST, run_cmd, small_data


def keys(n: int = 200) -> list[tuple[str, ...]]:
    return [
        (m, a, f"clip{i:03d}.wav", t)
        for m, a, i, t in itertools.product(("vgg13", "crnn"), ("cw", "fmn"), range(n // 4), ("",))
    ]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_job_belongs_to_exactly_one_process(count):
    ks = keys()
    owners = [[i for i in range(count) if cluster.Share(i, count).owns(k)] for k in ks]
    assert all(len(o) == 1 for o in owners)
    if count > 1:  # a hash of the identity spreads the jobs: no process gets none or all
        sizes = np.bincount([o[0] for o in owners], minlength=count)
        assert sizes.min() > len(ks) / count / 2, sizes
    # by identity, not position: the same key has the same owner in any order or subset
    again = [[i for i in range(count) if cluster.Share(i, count).owns(k)] for k in ks[::-1]]
    assert again == owners[::-1]


def test_a_bad_share_and_bad_flags_are_refused():
    with pytest.raises(ValueError, match="process 0..1"):
        cluster.Share(2, 2)
    args = argparse.Namespace(
        distributed=True, coordinator="127.0.0.1:1", num_processes=2, process_id=3
    )
    with pytest.raises(cluster.UserError, match="--process-id must be in 0..1"):
        cluster.initialize(args)
    args.num_processes, args.process_id = 0, None
    with pytest.raises(cluster.UserError, match="--num-processes must be at least 1"):
        cluster.initialize(args)


def test_distributed_is_requested_by_flag_or_cluster_environment(monkeypatch):
    none = argparse.Namespace(distributed=False, coordinator=None, num_processes=None)
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    assert not cluster.requested(none) and cluster.initialize(none) == cluster.Share()
    assert cluster.requested(argparse.Namespace(**{**vars(none), "distributed": True}))
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # one SLURM task: a plain run
    assert not cluster.requested(none)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert cluster.requested(none)


def row(key: tuple[str, ...], snr: float = 10.0) -> dict:
    r = dict.fromkeys(results.COLUMNS, "")
    r.update(dict(zip(results.KEY, key, strict=True)), success=1, snr_db=snr, steps=3)
    return r


def test_shards_merge_into_one_results_file_each_row_once(tmp_path):
    ks = keys(40)
    # a run of 3 processes, killed: each wrote part of its share, process 2 a torn last line
    for i in range(3):
        store = results.RunResults(tmp_path, cluster.Share(i, 3))
        mine = [k for k in ks if cluster.Share(i, 3).owns(k)]
        store.append(row(k) for k in mine[: len(mine) // 2])
    with open(tmp_path / results.SHARDS / "results-p2.csv", "a") as f:
        f.write("vgg13,cw,torn")
    done = {results.row_key(r) for r in results.RunResults(tmp_path).rows()}
    assert 0 < len(done) < len(ks)
    # restarted with 2 processes: each sees every file, so the shares of what is left are
    # disjoint and cover it (process 1 reopens its own shard of the old run)
    stores = [results.RunResults(tmp_path, cluster.Share(i, 2)) for i in range(2)]
    for i, store in enumerate(stores):
        assert all(k in store for k in done)
        left = [k for k in ks if k not in store and cluster.Share(i, 2).owns(k)]
        assert store.append(row(k) for k in left) == len(left)
        assert store.append([row(left[0])] if left else []) == 0  # a row is never written twice
    main = stores[0]
    assert main.merge() > 0
    assert not (tmp_path / results.SHARDS).exists()
    rows = results.read_rows(tmp_path / "results.csv")
    assert sorted(results.row_key(r) for r in rows) == sorted(ks)  # complete and unique
    assert main.rows() == rows and main.merge() == 0


def test_a_single_process_resumes_a_distributed_run_and_merges_it(tmp_path):
    ks = keys(20)
    results.RunResults(tmp_path, cluster.Share(1, 2)).append(row(k) for k in ks[:5])
    store = results.RunResults(tmp_path)  # no --distributed now
    assert store.path == tmp_path / "results.csv" and all(k in store for k in ks[:5])
    store.append(row(k) for k in ks)
    assert len(store.rows()) == len(ks)
    assert store.merge() == 5 and len(results.read_rows(tmp_path / "results.csv")) == len(ks)


def test_waveform_parts_of_several_writers_never_collide(tmp_path):
    folder = tmp_path / arrays.FOLDER
    a = arrays.ArrayStore(folder, writer="p0")
    b = arrays.ArrayStore(folder, writer="p1")
    a.append({("m", "cw", "x.wav", ""): np.ones(3)})
    b.append({("m", "cw", "y.wav", ""): np.zeros(4)})
    a.append({("m", "fmn", "x.wav", ""): np.full(2, 2.0)})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["part-p0-000000.npz", "part-p0-000001.npz", "part-p1-000000.npz"]
    # a reopened writer cleans only its own torn part: another's may be in flight
    (folder / "part-p1-000001.npz.tmp").write_bytes(b"half")
    (folder / "part-p0-000002.npz.tmp").write_bytes(b"half")
    arrays.ArrayStore(folder, writer="p0")
    assert (folder / "part-p1-000001.npz.tmp").exists()
    assert not (folder / "part-p0-000002.npz.tmp").exists()
    every = arrays.ArrayStore(folder)  # a single process reads every writer's parts
    assert len(every) == 3 and every[("m", "cw", "y.wav", "")].shape == (4,)
    assert not (folder / "part-p1-000001.npz.tmp").exists()  # and no one else is writing


def test_the_plan_of_a_share_has_only_its_jobs_and_the_whole_buckets_slots(tmp_path):
    from jaxadv.experiments import flags, models
    from jaxadv.experiments.clips import select_clips

    data = small_data(tmp_path / "data", ("Cello", "Bark", "Gong", "Oboe"), per_class=3)
    clips = select_clips(data, "auto", 3, 0, None, [])
    assert len(clips) == 12
    waves = {c.fname: np.zeros(32000, np.float32) for c in clips}
    m = models.load_models(["dense_mel"], {"dense_mel": _demo("dense_mel")}, "demo")[0]
    attacks = flags.attack_configs("untargeted", "demo", "dense_mel")
    jobs = [S.Job(c) for c in clips]
    store = results.RunResults(tmp_path / "run")
    whole = S.plan(store, m, attacks, jobs, waves, 16)
    split = [S.plan(store, m, attacks, jobs, waves, 16, cluster.Share(i, 2)) for i in range(2)]
    for k, p in enumerate(whole):
        got = [s[k].jobs for s in split]
        assert sorted(j.clip.fname for g in got for j in g) == sorted(j.clip.fname for j in p.jobs)
        assert not {j.clip.fname for j in got[0]} & {j.clip.fname for j in got[1]}
        assert split[0][k].slots == split[1][k].slots == p.slots  # same program as one process


def _demo(name: str) -> Path:
    from jaxadv import demo

    return demo.models_dir() / name


# --- two real processes ---------------------------------------------------------------------

FLAGS = ["--models", "vgg13", "--batch-size", "2", "--no-audio"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, data: str, count: int, port: int, log: Path) -> list[subprocess.Popen]:
    """``count`` processes of the untargeted command joined by the JAX runtime on localhost
    (sharing a compilation cache next to the data: a relaunch compiles nothing)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # gRPC on localhost
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # one local device each
    procs = []
    for i in range(count):
        cmd = [
            sys.executable, "-m", "jaxadv.experiments.untargeted", "--out", str(out),
            "--data", data, *FLAGS, *FAST, "--cache-dir", str(Path(data).parent / "cache"),
            "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", str(count), "--process-id", str(i),
        ]  # fmt: skip
        with open(log.with_suffix(f".{i}.log"), "w") as f:
            procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT))
    return procs


def wait_all(procs: list[subprocess.Popen], log: Path, timeout: float = 600) -> None:
    for i, p in enumerate(procs):
        rc = p.wait(timeout=timeout)
        assert rc == 0, log.with_suffix(f".{i}.log").read_text()[-3000:]


def table(out: Path) -> list[tuple]:
    rows = results.read_rows(out / "results.csv")
    return sorted(tuple((k, r[k]) for k in results.COLUMNS if k != "seconds") for r in rows)


def waveforms(out: Path) -> dict:
    store = arrays.ArrayStore(out / arrays.FOLDER, writable=False)
    return {k: store[k] for k in store.keys()}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    data = small_data(tmp / "data", ("Cello", "Bark", "Gong"))
    run_cmd(untargeted, tmp / "run", "--data", data, *FLAGS)
    return data, tmp / "run"


def same_run(a: Path, b: Path) -> None:
    ta, tb = table(a), table(b)
    assert len(ta) == len(tb) > 0 and ta == tb  # complete, unique, and bit for bit the same
    wa, wb = waveforms(a), waveforms(b)
    assert sorted(wa) == sorted(wb) and len(wa) == len(ta)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def test_two_processes_give_the_rows_of_one(tmp_path, one_process):
    data, single = one_process
    out, log = tmp_path / "run", tmp_path / "run"
    wait_all(launch(out, data, 2, free_port(), log), log)
    same_run(single, out)
    assert not (out / results.SHARDS).exists()  # merged by process 0
    parts = {p.name.split("-")[1] for p in (out / arrays.FOLDER).glob("part-*.npz")}
    assert parts == {"p0", "p1"}  # both processes attacked
    assert (out / "table2.md").is_file()  # the tables, once, by process 0
    assert "process 1 of 2: its share is done" in log.with_suffix(".1.log").read_text()


def test_a_process_killed_mid_run_is_resumed_exactly_once(tmp_path, one_process):
    data, single = one_process
    out, log = tmp_path / "run", tmp_path / "run"
    procs = launch(out, data, 2, free_port(), log)
    shard = out / results.SHARDS / "results-p1.csv"
    t0 = time.time()
    while not (shard.is_file() and len(shard.read_text().splitlines()) >= 3):
        assert time.time() - t0 < 300 and procs[1].poll() is None, "process 1 wrote no rows"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # mid-run: the runtime would stop process 0 too
    procs[0].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    before = [r for p in (out / results.SHARDS).glob("*.csv") for r in results.read_rows(p)]
    assert not (out / "results.csv").exists()  # made only by the merge at the end
    assert 0 < len(before) < len(table(single))
    # the whole job restarted with the same processes: only the missing jobs run
    wait_all(launch(out, data, 2, free_port(), log), log)
    same_run(single, out)
