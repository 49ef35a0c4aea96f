"""The paper's Tables 2-5 computed from result rows, written as Markdown and CSV.

Which examples each number averages over (the paper does not say; these choices reproduce its
magnitudes, e.g. a white-noise "GT New" far below the clean confidence):

* ``Success %``/``Acc.``: attacked examples (clips the model classified correctly) that succeeded.
* ``GT``: ground-truth probability on the clean clip, over attacked examples.
* ``New``, ``GT New``, ``SNR``: over the successful examples only.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table of strings/numbers with a header row."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""
    digits: int = 4  # decimals of numbers below 10 in Markdown (2 for larger ones)

    def to_markdown(self, digits: int | None = None) -> str:
        """GitHub Markdown, numbers below 10 with ``digits`` decimals, larger ones with 2."""
        digits = self.digits if digits is None else digits
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        for r in self.rows:
            lines.append("| " + " | ".join(_cell(v, digits) for v in r) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.md`` and ``<stem>.csv`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{stem}.md"
        md.write_text(self.to_markdown())
        cp = folder / f"{stem}.csv"
        with open(cp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.header)
            w.writerows([[_csv(v) for v in r] for r in self.rows])
        return md, cp


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _group(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    out: dict[Any, list[Row]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def _floats(rows: Sequence[Row], column: str) -> np.ndarray:
    return np.array([np.nan if r[column] in (None, "") else float(r[column]) for r in rows], float)


def row_metrics(rows: Sequence[Row]) -> Any:
    """Result rows as :class:`jaxadv.attacks.metrics.AttackMetrics` (numeric ``[R]`` arrays).

    ``fooled`` is the rows' ``success`` (the rows do not store the decision check separately),
    ``original``/``new_label`` are label indices (in ``config.LABELS``; other names are numbered
    after them).
    """
    from jaxadv import config as C
    from jaxadv.attacks.metrics import AttackMetrics

    # other names (a model's own labels) get indices after config.LABELS', in sorted order, so
    # equal names stay equal indices
    others = sorted({r[c] for r in rows for c in ("original", "adversarial")} - set(C.LABELS))
    extra = {name: C.NUM_CLASSES + i for i, name in enumerate(others)}

    def index(column: str) -> np.ndarray:
        return np.array([C.LABEL_INDEX.get(r[column], extra.get(r[column], -1)) for r in rows],
                        np.int32)  # fmt: skip

    ok = np.array([bool(r["success"]) for r in rows], bool)
    return AttackMetrics(
        success=ok,
        fooled=ok,
        original=index("original"),
        new_label=index("adversarial"),
        new_confidence=_floats(rows, "new_conf"),
        gt_confidence=_floats(rows, "gt_conf"),
        gt_confidence_adv=_floats(rows, "gt_conf_adv"),
        target_confidence=_floats(rows, "target_conf"),
        snr_db=_floats(rows, "snr_db"),
        l2=_floats(rows, "l2"),
        linf=_floats(rows, "linf"),
        steps=np.array([int(r["steps"] or 0) for r in rows], np.int64),
    )


def _summary(rows: Sequence[Row]) -> dict[str, float]:
    """:func:`jaxadv.attacks.metrics.summarize` of rows (its columns, e.g. ``success_pct``)."""
    from jaxadv.attacks.metrics import summarize

    return summarize(row_metrics(rows))


def table2(rows: Sequence[Row], attacks: Sequence[str]) -> Table:
    """Table 2: per attack, over all models: Success %, New, GT New, SNR (dB)."""
    from jaxadv.attacks.metrics import TABLE2

    by = _group(rows, lambda r: r["attack"])
    out = []
    for a in attacks:
        s = _summary(by.get(a, []))
        out.append((a, int(s["n"]), *(s[k] for k in TABLE2)))
    return Table(
        "Table 2: untargeted attacks across all models",
        ("Attack", "N", "Success %", "New", "GT New", "SNR (dB)"),
        tuple(out),
        "New, GT New and SNR are means over successful examples.",
    )


def table3(rows: Sequence[Row], attack: str, models: Sequence[str]) -> Table:
    """Table 3 (a)/(b): per model for one attack: Acc. (success %), GT, New, GT new, SNR."""
    from jaxadv.attacks.metrics import TABLE3

    by = _group((r for r in rows if r["attack"] == attack), lambda r: r["model"])
    out = []
    for m in models:
        s = _summary(by.get(m, []))
        out.append((m, int(s["n"]), *(s[k] for k in TABLE3)))
    return Table(
        f"Table 3: {attack} per model",
        ("Model", "N", "Acc. (success %)", "GT", "New", "GT new", "SNR (dB)"),
        tuple(out),
        "GT is over attacked examples; New, GT new and SNR over successful examples.",
    )


def pair_matrix(rows: Sequence[Row], labels: Sequence[str], column: str) -> np.ndarray:
    """``[L, L]`` summary ``column`` (e.g. ``"snr"``, ``"success_pct"``) of the rows of each
    source-label (row) → target-label (column) pair; NaN on the diagonal and for empty pairs."""
    by = _group(rows, lambda r: (r["label"], r["target"]))
    out = np.full((len(labels), len(labels)), np.nan)
    for i, src in enumerate(labels):
        for j, tgt in enumerate(labels):
            if src != tgt:
                out[i, j] = _summary(by.get((src, tgt), []))[column]
    return out


def matrix_table(
    matrix: np.ndarray, labels: Sequence[str], title: str, note: str = "", digits: int = 2
) -> Table:
    """A source × target matrix as a table (rows: source, columns: target); diagonal "NA"."""
    out = []
    for i, src in enumerate(labels):
        cells = ["NA" if i == j else float(matrix[i, j]) for j in range(len(labels))]
        out.append((src, *cells))
    return Table(title, ("Source \\ Target", *labels), tuple(out), note, digits)


def table4(rows: Sequence[Row], attack: str, labels: Sequence[str]) -> Table:
    """Table 4: mean SNR (dB) of successful targeted attacks per source→target pair, all models."""
    sel = [r for r in rows if r["attack"] == attack]
    return matrix_table(
        pair_matrix(sel, labels, "snr"),
        labels,
        f"Table 4: mean SNR (dB) of successful targeted {attack} attacks, all models",
        "Rows: source (true) label; columns: target label.",
    )


def success_pct_matrix(rows: Sequence[Row], attack: str, labels: Sequence[str]) -> np.ndarray:
    """Figure 2's numbers: ``[L, L]`` targeted success % per source→target pair, all models."""
    return pair_matrix([r for r in rows if r["attack"] == attack], labels, "success_pct")


def success_table(matrix: np.ndarray, attack: str, labels: Sequence[str]) -> Table:
    """The table of :func:`success_pct_matrix`'s matrix."""
    return matrix_table(
        matrix, labels, f"Targeted {attack} success % per source→target pair, all models"
    )


def success_matrix(rows: Sequence[Row], attack: str, labels: Sequence[str]) -> Table:
    """Figure 2's numbers as a table (:func:`success_pct_matrix`, :func:`success_table`)."""
    return success_table(success_pct_matrix(rows, attack, labels), attack, labels)


def table5(transfer_rows: Sequence[Row], models: Sequence[str]) -> Table:
    """Table 5: % of one model's adversarial examples that fool another model.

    Rows: the model the examples are applied to; columns: the model whose adversarial examples are
    used (the paper's layout). ``transfer_rows`` have ``source_model``, ``eval_model`` and
    ``fooled`` (see :mod:`jaxadv.experiments.transfer`).
    """
    by = _group(transfer_rows, lambda r: (r["eval_model"], r["source_model"]))
    out = []
    for ev in models:
        cells: list[Any] = [ev]
        for src in models:
            rs = by.get((ev, src), [])
            if ev == src:
                cells.append("NA")
            else:
                cells.append(
                    100.0 * sum(bool(r["fooled"]) for r in rs) / len(rs) if rs else float("nan")
                )
        out.append(tuple(cells))
    return Table(
        "Table 5: transferability (%) of untargeted DeepFool and C&W adversarial examples",
        ("Applied to \\ Examples from", *models),
        tuple(out),
        "Rows: the model the adversarial examples are applied to; columns: the model they were "
        "made for. Only successful examples on clips both models classify correctly count.",
        digits=2,
    )


def _gaps(rows: Sequence[Row]) -> tuple[Any, Any, dict[tuple, int]]:
    """Best-known SNR and gap (dB) of each row; examples = model x clip x target."""
    from jaxadv.attacks import metrics

    ids: dict[tuple, int] = {}
    groups = np.array(
        [ids.setdefault((r["model"], r["fname"], r["target"]), len(ids)) for r in rows]
    )
    snr = np.array([float(r["snr_db"]) for r in rows], float)
    ok = np.array([bool(r["success"]) for r in rows])
    best = metrics.best_known_snr(groups, snr, ok) if rows else np.zeros(0)
    return best, metrics.gap_db(snr, ok, best) if rows else np.zeros(0), ids


def best_known(rows: Sequence[Row]) -> Table:
    """Per model x clip x target: the best-known perturbation (largest SNR any attack reached)."""
    best, _, ids = _gaps(rows)
    out = {}
    for r, b in zip(rows, best, strict=True):
        key = (r["model"], r["fname"], r["target"])
        if r["success"] and float(r["snr_db"]) == b:
            out.setdefault(key, (b, r["attack"]))
    table = [(m, f, t or "", *out.get((m, f, t), (float("nan"), ""))) for (m, f, t) in ids]
    return Table(
        "Best-known minimal perturbation per example (the smallest any attack found)",
        ("Model", "Clip", "Target", "Best SNR (dB)", "Found by"),
        tuple(table),
    )


def gap_table(rows: Sequence[Row], attacks: Sequence[str]) -> Table:
    """Per attack: its gap to the best-known perturbation of each example (median, 90th pct)."""
    from jaxadv.attacks import metrics

    _, gap, _ = _gaps(rows)
    out = []
    for a in attacks:
        g = [x for r, x in zip(rows, gap, strict=True) if r["attack"] == a]
        s = metrics.summarize_gap(g)
        n_ok = sum(1 for r in rows if r["attack"] == a and r["success"])
        out.append((a, n_ok, s["gap_median"], s["gap_p90"]))
    return Table(
        "Gap to the best-known perturbation (dB; 0 = the smallest any attack found)",
        ("Attack", "Successful", "Gap median", "Gap 90th pct"),
        tuple(out),
        "Best-known = the largest SNR among the successful attacks of the same model, clip and "
        "target (Pintor et al. 2021); gaps over the attack's successful examples.",
    )
