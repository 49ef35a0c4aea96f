"""Several processes, one run: JAX's multi-controller runtime and each process's share of the jobs.

With ``--distributed`` (or when a launcher sets up a JAX cluster: ``JAX_COORDINATOR_ADDRESS``, or a
SLURM step of several tasks), every process of an experiment command calls
:func:`jax.distributed.initialize` (:func:`initialize`), attacks only its :class:`Share` of the jobs
on its own local devices, and appends its rows to its own shard of the run folder's results
(:class:`jaxadv.experiments.results.RunResults`). Process 0 writes ``config.json`` and, once every
process has finished its share (:func:`barrier`), merges the shards into ``results.csv`` and makes
the tables and figures.

A job belongs to the process ``sha256(model|attack|fname|target) mod P``: by the job's identity,
not its position in a list, so a restart with the same processes gives each process the same jobs,
and a restart with another number of processes still runs each job that has no row exactly once.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
from collections.abc import Sequence

from jaxadv.cli import UserError

# A barrier waits for the slowest process's whole share: hours on a big sweep. A process that
# dies is noticed by the runtime's heartbeats (the others stop then), not by this timeout.
BARRIER_TIMEOUT_S = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Share:
    """Process ``index`` of ``count``: the jobs it owns (:meth:`owns`); 0 of 1 owns every job."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a share is process 0..{self.count - 1}, got {self.index}")

    @property
    def main(self) -> bool:
        """Process 0 writes the run's config, clean pass, merged results and tables."""
        return self.index == 0

    @property
    def writer(self) -> str:
        """The tag of this process's files in a run folder ("" for a single process)."""
        return "" if self.count == 1 else f"p{self.index}"

    def owns(self, key: Sequence[str]) -> bool:
        """Whether the job ``key`` ``(model, attack, fname, target)`` is this process's."""
        if self.count == 1:
            return True
        h = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
        return int.from_bytes(h[:8], "big") % self.count == self.index


def add_flags(p: argparse.ArgumentParser) -> None:
    """``--distributed`` and the coordinates of this process (each optional where a cluster
    launcher provides it)."""
    g = p.add_argument_group(
        "several processes (hosts)",
        "one process per host, each attacking its share of the jobs on its local devices "
        "(see experiments/README.md, 'Sweeps on several hosts')",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join a JAX multi-process run (automatic when JAX_COORDINATOR_ADDRESS is set or "
        "in a SLURM step of several tasks); on SLURM and TPU pods the peers are found by JAX",
    )
    g.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT",
        help="address of process 0 (unset: from the cluster environment)",
    )  # fmt: skip
    g.add_argument(
        "--num-processes", type=int, default=None, metavar="P",
        help="number of processes (unset: from the cluster environment)",
    )  # fmt: skip
    g.add_argument(
        "--process-id", type=int, default=None, metavar="I",
        help="this process, 0..P-1 (unset: from the cluster environment)",
    )  # fmt: skip


def requested(args: argparse.Namespace) -> bool:
    """Whether this command runs as one process of several (flags or cluster environment)."""
    if getattr(args, "distributed", False):
        return True
    if any(getattr(args, k, None) is not None for k in ("coordinator", "num_processes")):
        return True
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or ""
    return tasks.isdigit() and int(tasks) > 1


def initialize(args: argparse.Namespace) -> Share:
    """Join the JAX distributed runtime if :func:`requested` (before anything touches a device);
    returns this process's share (0 of 1 when not distributed)."""
    if not requested(args):
        return Share()
    import jax

    n, i = args.num_processes, args.process_id
    if n is not None and n < 1:
        raise UserError(f"--num-processes must be at least 1, got {n}")
    if n is not None and i is not None and not 0 <= i < n:
        raise UserError(f"--process-id must be in 0..{n - 1} for --num-processes {n}, got {i}")
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize(
                coordinator_address=args.coordinator, num_processes=n, process_id=i
            )
        except (RuntimeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"--distributed: could not join the JAX multi-process runtime ({msg}); give "
                "--coordinator HOST:PORT, --num-processes and --process-id, or launch under a "
                "cluster manager JAX detects (SLURM, a TPU pod, Open MPI)"
            ) from e
    return Share(jax.process_index(), jax.process_count())


def barrier(share: Share, name: str) -> None:
    """Wait until every process of the run reached ``name`` (nothing with one process)."""
    if share.count == 1:
        return
    from jax._src import distributed  # the runtime's client: barriers without a collective

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("barrier() of a distributed share before initialize()")
    client.wait_at_barrier(f"jaxadv:{name}", BARRIER_TIMEOUT_S * 1000)
