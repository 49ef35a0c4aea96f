"""Per-example results of a sweep: one append-only CSV that survives a kill and resumes.

Every attack on every clip becomes one row (:data:`COLUMNS`). Rows are appended and flushed batch by
batch; a sweep that is killed leaves at most a partial last line, which :class:`ResultStore` drops
when it reopens the file. The key ``(model, attack, fname, target)`` identifies a row, so the same
command run again skips finished work and never writes a row twice.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from jaxadv.cli import UserError

# One row per (model, attack, clip, target). Confidences are clip probabilities in [0, 1].
COLUMNS: tuple[str, ...] = (
    "model",  # registry name of the attacked model
    "attack",  # attack name (e.g. "deepfool", "cw")
    "fname",  # clip file name
    "label",  # ground-truth label name
    "target",  # target label name, "" when untargeted
    "original",  # the model's prediction on the clean clip
    "adversarial",  # the model's prediction on the adversarial clip
    "success",  # 1 if the attack met its criterion, else 0
    "gt_conf",  # ground-truth probability on the clean clip
    "new_conf",  # probability of the adversarial prediction, on the adversarial clip
    "gt_conf_adv",  # ground-truth probability on the adversarial clip
    "target_conf",  # target probability on the adversarial clip ("" when untargeted)
    "snr_db",  # 10*log10(sum x^2 / sum delta^2) over the clip's valid samples
    "l2",  # ||delta||_2
    "linf",  # ||delta||_inf
    "steps",  # iterations/steps the attack used on this example
    "seconds",  # wall time of the batch, divided by its size
    "adv_file",  # adversarial audio written for listening, relative to the run folder ("" if none)
)
KEY: tuple[str, ...] = ("model", "attack", "fname", "target")

_INT = {"success", "steps"}
_FLOAT = {"gt_conf", "new_conf", "gt_conf_adv", "target_conf", "snr_db", "l2", "linf", "seconds"}


class Schema(NamedTuple):
    """The columns of a results file, the columns that identify a row, and which are typed."""

    columns: tuple[str, ...]
    key: tuple[str, ...]
    ints: frozenset[str] = frozenset()
    floats: frozenset[str] = frozenset()


RESULTS = Schema(COLUMNS, KEY, frozenset(_INT), frozenset(_FLOAT))  # the attacks' results.csv


class ResultsError(UserError, ValueError):
    """A results file that is not one this module wrote (another header)."""


def row_key(row: Mapping[str, Any], schema: Schema = RESULTS) -> tuple[str, ...]:
    """The identity of a row: ``(model, attack, fname, target)`` (``schema.key``) as strings."""
    return tuple(str(row[k]) for k in schema.key)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(round(value, 7)) if abs(value) >= 1e-4 or value == 0 else f"{value:.6e}"
    return str(value)


def _parse(name: str, text: str, schema: Schema = RESULTS) -> Any:
    if text == "":
        return None if name in schema.floats or name in schema.ints else ""
    if name in schema.ints:
        return int(text)
    if name in schema.floats:
        return float(text)
    return text


class ResultStore:
    """Append-only CSV of result rows with resume.

    Args:
      path: the CSV file (created with a header if missing).
      schema: its columns and key (default: the attacks' :data:`RESULTS`).

    A trailing partial line (a kill during a write) is removed on open; a file whose header differs
    from :data:`COLUMNS` is refused rather than silently mixed.
    """

    def __init__(self, path: str | os.PathLike, schema: Schema = RESULTS):
        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(schema.columns)
        self._repair()
        self._keys = {row_key(r, schema) for r in self.rows()}

    def _repair(self) -> None:
        data = self.path.read_bytes()
        _check_header(self.path, data, self.schema.columns)
        if not data.endswith(b"\n"):
            # killed in the middle of a write: drop the partial last line
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return tuple(str(k) for k in key) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def rows(self) -> list[dict[str, Any]]:
        """All rows, parsed (ints, floats, strings)."""
        with open(self.path, newline="") as f:
            return [{k: _parse(k, v, self.schema) for k, v in r.items()} for r in csv.DictReader(f)]

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows not yet present; flushed to disk before returning. Returns how many."""
        new = []
        for r in rows:
            missing = [c for c in self.schema.columns if c not in r]
            if missing:
                raise ValueError(f"result row lacks column(s) {missing}: {dict(r)}")
            k = row_key(r, self.schema)
            if k in self._keys:
                continue
            self._keys.add(k)
            new.append([_format(r[c]) for c in self.schema.columns])
        if new:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerows(new)
                f.flush()
                os.fsync(f.fileno())
        return len(new)


SHARDS = "shards"  # a run folder's per-process result files, while a distributed run is on


class RunResults:
    """The result rows of a run folder when one or several processes write it.

    Args:
      out: the run folder.
      share: this process's :class:`~jaxadv.experiments.cluster.Share` (default: the only one).

    A single process appends to ``results.csv``; process ``i`` of several appends to its own
    ``shards/results-pI.csv`` (a :class:`ResultStore` each: no two processes ever write one
    file, so no row is torn by another's write, also on a shared network file system). Reading
    (``in``, :meth:`rows`) sees every file, so a job whose row any process wrote, in this run or
    an earlier one with another number of processes, is never run again. :meth:`merge` (process
    0, once every process is done) moves the shards' rows into ``results.csv``.
    """

    def __init__(self, out: str | os.PathLike, share: Any = None):
        self.out = Path(out)
        self.writer = "" if share is None else share.writer
        own = f"{SHARDS}/results-{self.writer}.csv" if self.writer else "results.csv"
        self.own = ResultStore(self.out / own)
        self._keys = set(self.own._keys)
        for p in self._others():
            self._keys.update(row_key(r) for r in read_rows(p))

    def _others(self) -> list[Path]:
        return [p for p in run_files(self.out) if p != self.own.path]

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return tuple(str(k) for k in key) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def path(self) -> Path:
        """This process's own results file."""
        return self.own.path

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append to this process's file the rows no file has yet; returns how many."""
        new = [r for r in rows if row_key(r) not in self._keys]
        n = self.own.append(new)
        self._keys.update(row_key(r) for r in new)
        return n

    def rows(self) -> list[dict[str, Any]]:
        """Every row of every file, each key once (:func:`read_run_rows`)."""
        return read_run_rows(self.out)

    def merge(self) -> int:
        """Move every shard's rows into ``results.csv`` and remove the shards; returns how many
        rows were added. Only while no process writes (a kill mid-way loses nothing: a shard
        goes only after its rows are on disk in ``results.csv``, and a row is added once)."""
        shards = sorted((self.out / SHARDS).glob("results-*.csv"))
        if not shards:
            return 0
        main = self.own if not self.writer else ResultStore(self.out / "results.csv")
        n = 0
        for p in shards:
            n += main.append(read_rows(p))
            p.unlink()
        try:
            (self.out / SHARDS).rmdir()
        except OSError:
            pass  # something else there: leave it
        self.own, self.writer = main, ""
        return n


def run_files(out: str | os.PathLike) -> list[Path]:
    """The results files of a run folder: ``results.csv`` (if there) and any process shards."""
    out = Path(out)
    main = out / "results.csv"
    return ([main] if main.is_file() else []) + sorted((out / SHARDS).glob("results-*.csv"))


def read_run_rows(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a run folder without writing anything: ``results.csv`` and then the shards
    of a distributed run (:class:`RunResults`), each key once; a torn last line is ignored."""
    seen: set[tuple[str, ...]] = set()
    rows = []
    for p in run_files(out):
        for r in read_rows(p):
            if row_key(r) not in seen:
                seen.add(row_key(r))
                rows.append(r)
    return rows


def _check_header(path: Path, data: bytes, columns: tuple[str, ...] = COLUMNS) -> None:
    header = ",".join(columns).encode()
    if not data.startswith(header):
        first = data.split(b"\n", 1)[0].decode(errors="replace")
        raise ResultsError(
            f"results file '{path}' has header {first!r}, not the expected columns "
            f"{','.join(columns)!r}; move it away or choose another output folder"
        )


def read_rows(path: str | os.PathLike, schema: Schema = RESULTS) -> list[dict[str, Any]]:
    """The rows of a results file without opening it for writing (no repair, nothing created).

    A partial last line (a kill during a write) is ignored, as :class:`ResultStore` would drop it.
    """
    path = Path(path)
    data = path.read_bytes()
    _check_header(path, data, schema.columns)
    text = data.decode()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = csv.DictReader(text.splitlines())
    return [{k: _parse(k, v, schema) for k, v in r.items()} for r in rows]


def write_json(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as a JSON list (infinities as strings ``"inf"``, which JSON lacks)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        return v

    path = Path(path)
    path.write_text(json.dumps([{k: clean(v) for k, v in r.items()} for r in rows], indent=1))
    return path
