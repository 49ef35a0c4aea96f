"""A run report you can listen to: ``report.html`` in a run folder.

:func:`write` renders, with Jinja2, one self-contained page (no network, no CDN): the run's
configuration and machine (``config.json``), every table (the experiment's own summaries,
:func:`jaxadv.experiments.untargeted.tables_of` and its siblings, computed from the result rows),
every figure of the folder, and an example browser — one row per attacked example, filterable by
model, attack, source and target label and success, paginated in the browser, each with audio
players for the clean clip, the adversarial clip and the perturbation alone (amplified by a
stated gain so that it is audible), its SNR and confidences, and a clean-vs-adversarial
spectrogram pair.

The page's audio and images live next to it in ``report_files/`` and are referenced by relative
paths (the folder can be zipped and opened anywhere); ``embed=True`` puts them inside the page as
``data:`` URIs instead (one portable file, large for big runs). Audio elements load nothing until
played (``preload="none"``) and only one page of examples is in the document at a time, so a
run of thousands of examples opens at once.

Files of ``report_files/`` (32 kHz):

* ``clean/<stem>.flac``: the clean clip as the models saw it (24-bit FLAC);
* the adversarial clip: the row's own float WAV (``audio/...``) where the run wrote one, else
  ``adversarial/<model>/<attack>/<stem>[__to_<target>].wav`` (float WAV, exact);
* ``perturbation/...flac``: adversarial − clean times the row's gain (16-bit FLAC; the gain brings
  the perturbation's RMS to :data:`PERTURBATION_RMS_DBFS` with its peak at most
  :data:`PERTURBATION_PEAK_DBFS`);
* ``spectrogram/...png``: log-mel spectrograms of the clean and adversarial clips side by side,
  on one colour scale.

``python -m jaxadv.report RUN`` regenerates the page of an existing run folder.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxadv import config as C

FILES = "report_files"  # the page's audio and images, next to it
PERTURBATION_RMS_DBFS = -20.0  # the amplified perturbation's RMS level
PERTURBATION_PEAK_DBFS = -1.0  # ... and its highest peak (the gain is lowered to keep it)
PER_PAGE = 25  # examples per page of the browser

# Captions of the figures the commands write (a figure not listed gets its file name).
FIGURE_CAPTIONS = {
    "figure1": "Figure 1: adversarial labels of the successful untargeted examples (all models)",
    "figure2_cw": "Figure 2 (a): targeted C&W success % per source → target pair (all models)",
    "figure2_lbfgs": "Figure 2 (b): targeted L-BFGS success % per source → target pair",
}


@dataclasses.dataclass(frozen=True)
class Example:
    """One attacked example of the browser: its result row and the paths of its media."""

    row: Mapping[str, Any]
    clean: str  # relative to the run folder (or a data: URI when embedded)
    adversarial: str
    perturbation: str
    spectrogram: str
    gain_db: float  # the perturbation file is the perturbation times 10^(gain_db / 20)


def _stem(row: Mapping[str, Any]) -> str:
    tgt = f"__to_{row['target']}" if row.get("target") else ""
    return f"{row['model']}/{row['attack']}/{Path(row['fname']).stem}{tgt}"


def perturbation_gain_db(delta: np.ndarray) -> float:
    """The gain (dB) that brings ``delta``'s RMS to :data:`PERTURBATION_RMS_DBFS` without a peak
    above :data:`PERTURBATION_PEAK_DBFS` (0 for a zero perturbation)."""
    rms = float(np.sqrt(np.mean(np.square(delta, dtype=np.float64)))) if delta.size else 0.0
    peak = float(np.max(np.abs(delta))) if delta.size else 0.0
    if peak == 0.0:
        return 0.0
    return min(
        PERTURBATION_RMS_DBFS - 20 * math.log10(rms), PERTURBATION_PEAK_DBFS - 20 * math.log10(peak)
    )


@functools.cache
def _mel_basis(sample_rate: int = C.SAMPLE_RATE) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=1024, n_mels=64).astype(np.float32)


def _log_mel(x: np.ndarray, sample_rate: int = C.SAMPLE_RATE) -> np.ndarray:
    """``[64, frames]`` log-mel power (dB) of ``x``: 1024-sample Hann frames, a 10 ms hop
    (NumPy only: the report runs after the attacks and should take seconds)."""
    n_fft, hop = 1024, sample_rate // 100
    x = np.pad(np.asarray(x, np.float32), n_fft // 2)
    n = 1 + max(0, len(x) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2
    return 10 * np.log10(np.maximum(_mel_basis(sample_rate) @ spec.T, 1e-12))


def spectrogram_pair(
    clean: np.ndarray, adversarial: np.ndarray, path: Path, sample_rate: int = C.SAMPLE_RATE
) -> Path:
    """Log-mel spectrograms (64 bands, 10 ms hop) of both clips side by side as one PNG, on the
    clean clip's colour scale (80 dB range), low frequencies at the bottom."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    a, b = _log_mel(clean, sample_rate), _log_mel(adversarial, sample_rate)
    top = float(a.max())
    gap = np.full((a.shape[0], 3), np.nan)
    img = np.concatenate([a, gap, b], axis=1)[::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    cmap = plt.get_cmap("magma").with_extremes(bad="white")
    plt.imsave(path, np.ma.masked_invalid(img), cmap=cmap, vmin=top - 80, vmax=top)
    return path


def _data_uri(path: Path) -> str:
    kind = {
        ".png": "image/png",
        ".wav": "audio/wav",
        ".flac": "audio/flac",
    }.get(path.suffix, "application/octet-stream")
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def _examples(
    out: Path,
    rows: Sequence[Mapping[str, Any]],
    waves: Mapping[str, np.ndarray],
    arrays: Any,
    progress: bool,
    sample_rate: int = C.SAMPLE_RATE,
) -> list[Example]:
    """Write the media of every row that has both waveforms (existing files are kept: they are
    derived from rows that never change) and return the examples."""
    from tqdm import tqdm

    from jaxadv import audio
    from jaxadv.experiments import arrays as A

    files = out / FILES
    done_clean: set[str] = set()
    examples = []
    for r in tqdm(rows, desc="report", unit="ex", disable=not progress, leave=False):
        clean = waves.get(r["fname"])
        adv = A.adversarial(arrays, r, out)
        if clean is None or adv is None:
            continue
        adv = np.asarray(adv, np.float32)
        clean = np.asarray(clean, np.float32)[: len(adv)]
        stem = _stem(r)
        cpath = files / "clean" / f"{Path(r['fname']).stem}.flac"
        if r["fname"] not in done_clean and not cpath.is_file():
            cpath.parent.mkdir(parents=True, exist_ok=True)
            audio.write_audio(cpath, np.clip(clean, -1, 1), sample_rate, subtype="PCM_24")
        done_clean.add(r["fname"])
        if r.get("adv_file") and (out / r["adv_file"]).is_file():
            apath = out / r["adv_file"]
        else:
            apath = files / "adversarial" / f"{stem}.wav"
            if not apath.is_file():
                apath.parent.mkdir(parents=True, exist_ok=True)
                audio.write_audio(apath, adv, sample_rate, subtype="FLOAT")
        delta = adv - clean
        gain = perturbation_gain_db(delta)
        ppath = files / "perturbation" / f"{stem}.flac"
        if not ppath.is_file():
            ppath.parent.mkdir(parents=True, exist_ok=True)
            loud = np.clip(delta.astype(np.float64) * 10 ** (gain / 20), -1, 1)
            audio.write_audio(ppath, loud.astype(np.float32), sample_rate, subtype="PCM_16")
        spath = files / "spectrogram" / f"{stem}.png"
        if not spath.is_file():
            spectrogram_pair(clean, adv, spath, sample_rate)
        rel = [p.relative_to(out).as_posix() for p in (cpath, apath, ppath, spath)]
        examples.append(Example(r, *rel, gain))
    return examples


def _table_html(t: Any) -> dict[str, Any]:
    from jaxadv.experiments.tables import _cell

    return {
        "title": t.title,
        "header": list(t.header),
        "rows": [[_cell(v, t.digits) for v in r] for r in t.rows],
        "note": t.note,
    }


def _example_json(e: Example, embed: bool, out: Path) -> dict[str, Any]:
    r = e.row

    def num(k: str) -> float | None:
        v = r.get(k)
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    media = [e.clean, e.adversarial, e.perturbation, e.spectrogram]
    if embed:
        media = [_data_uri(out / m) for m in media]
    return {
        "model": r["model"],
        "attack": r["attack"],
        "fname": r["fname"],
        "label": r["label"],
        "target": r.get("target") or "",
        "original": r["original"],
        "adversarial": r["adversarial"],
        "success": int(r["success"]),
        "snr_db": num("snr_db"),
        "gt_conf": num("gt_conf"),
        "new_conf": num("new_conf"),
        "gt_conf_adv": num("gt_conf_adv"),
        "target_conf": num("target_conf"),
        "steps": r.get("steps"),
        "gain_db": e.gain_db,  # exact: the file is the perturbation times 10^(gain_db / 20)
        "clean": media[0],
        "adv": media[1],
        "delta": media[2],
        "spec": media[3],
    }


def _figures(out: Path, embed: bool) -> list[dict[str, str]]:
    figs = []
    for p in sorted(out.glob("*.png")):
        caption = FIGURE_CAPTIONS.get(p.stem)
        if caption is None and p.stem.startswith("figure3_"):
            caption = (
                f"Figure 3: spectrograms of a clip and its C&W and DeepFool versions "
                f"({p.stem.removeprefix('figure3_')})"
            )
        figs.append({"src": _data_uri(p) if embed else p.name, "caption": caption or p.name})
    return figs


def write(
    out: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    tables: Mapping[str, Any],
    waves: Mapping[str, np.ndarray],
    arrays: Any,
    *,
    embed: bool = False,
    per_page: int = PER_PAGE,
    progress: bool = True,
    sample_rate: int = C.SAMPLE_RATE,
) -> Path:
    """Write ``report.html`` (and ``report_files/``) into the run folder ``out``.

    Args:
      out: the run folder (its ``config.json`` and ``*.png`` figures are shown).
      rows: the result rows (:data:`jaxadv.experiments.results.COLUMNS`) of the examples.
      tables: the tables to show, by file stem (:class:`jaxadv.experiments.tables.Table`).
      waves: clean waveforms ``[n] float32`` at ``sample_rate`` (the models', Hz) by clip name.
      arrays: the run's :class:`~jaxadv.experiments.arrays.ArrayStore` (adversarial waveforms).
      embed: media as ``data:`` URIs inside the page (one portable file).
      per_page: examples per page of the browser.
    """
    import jinja2

    from jaxadv.experiments.runfolder import read_run_config

    out = Path(out)
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    config = read_run_config(out) or {}
    examples = _examples(out, rows, waves, arrays, progress, sample_rate)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("jaxadv.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    page = env.get_template("report.html.j2").render(
        title=f"jaxadv {config.get('experiment', 'run')} run: {out.name}",
        config=_config_view(config),
        config_json=json.dumps(
            {k: config.get(k) for k in ("args", "attacks", "models")}, indent=1, default=str
        ),
        tables=[{"stem": k, **_table_html(t)} for k, t in tables.items()],
        figures=_figures(out, embed),
        examples=[_example_json(e, embed, out) for e in examples],
        n_rows=len(rows),
        per_page=per_page,
        gain_note=(
            f"the perturbation alone, amplified so that its RMS is {PERTURBATION_RMS_DBFS:g} dBFS "
            f"(peak at most {PERTURBATION_PEAK_DBFS:g} dBFS); the gain is shown under the player"
        ),
    )
    path = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _config_view(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's settings worth a glance, as (name, text) pairs."""
    machine = config.get("machine") or {}
    fp = config.get("fingerprint") or {}
    items = [
        ("command", config.get("command", "")),
        ("experiment", config.get("experiment", "")),
        ("preset", str(fp.get("preset", ""))),
        ("note", config.get("note", "")),
        ("models", ", ".join(config.get("models") or {})),
        ("clips", str(len(config.get("clips") or []))),
        ("skipped clips", str(len(config.get("skipped") or []))),
        ("processes", str(config.get("processes", 1))),
        ("jaxadv / jax", f"{config.get('jaxadv', '')} / {config.get('jax', '')}"),
        ("devices", ", ".join(config.get("devices") or [])),
        ("machine", f"{machine.get('platform', '')}, {machine.get('cpus', '')} CPUs"),
    ]
    return [(k, str(v)) for k, v in items if v not in ("", None)]


def _experiments() -> dict[str, Any]:
    """Each experiment's table maker and the classes its clips come from (None: all)."""
    from jaxadv.experiments import compression, robustness, targeted, transfer, untargeted

    return {
        "untargeted": (untargeted.tables_of, None),
        "targeted": (targeted.tables_of, C.MUSIC_CLASSES),
        "transfer": (transfer.tables_of, None),
        "compression": (compression.tables_of, None),
        "robustness": (robustness.tables_of, None),
    }


def regenerate(
    out: str | os.PathLike,
    *,
    data: str | None = None,
    embed: bool = False,
    per_page: int = PER_PAGE,
    progress: bool = True,
) -> Path:
    """Write ``report.html`` of an existing run folder from its stored rows and waveforms.

    The clean clips are loaded as the run loaded them (its ``--data``, split, clips per class,
    seed and preset from ``config.json``; ``data`` overrides the folder if it moved). Nothing but
    ``report.html`` and ``report_files/`` is written.
    """
    from jaxadv.cli import UserError
    from jaxadv.experiments import arrays as A
    from jaxadv.experiments import results
    from jaxadv.experiments.clips import load_waves, select_clips
    from jaxadv.experiments.models import clean_table, read_clean
    from jaxadv.experiments.runfolder import read_run_config

    out = Path(out)
    config = read_run_config(out)
    if config is None:
        raise UserError(
            f"{out}: not a jaxadv run folder (no config.json written by an experiment command); "
            "give the --out folder of a run"
        )
    experiment = config.get("experiment")
    if experiment not in _experiments():
        raise UserError(f"{out}: a {experiment!r} run has no report; choose a run folder of "
                        f"{sorted(_experiments())}")  # fmt: skip
    make_tables, classes = _experiments()[experiment]
    args = config.get("args") or {}
    fp = config.get("fingerprint") or {}
    models = list(config.get("models") or {})
    rows = results.read_run_rows(out)
    store = A.ArrayStore(out / A.FOLDER, writable=False)
    tables: dict[str, Any] = {}
    if (out / "clean.csv").is_file():
        tables["clean_accuracy"] = clean_table(read_clean(out / "clean.csv"))
    if experiment == "transfer":
        import csv

        if (out / "transfer.csv").is_file():
            with open(out / "transfer.csv", newline="") as f:
                trows = [{**r, "fooled": int(r["fooled"])} for r in csv.DictReader(f)]
            tables.update(make_tables(trows, models))
        src = fp.get("from_untargeted") or args.get("from_untargeted")  # resolved when run
        if src:  # the examples are the untargeted run's (read only)
            rows = results.read_run_rows(src)
            store = A.ArrayStore(Path(src) / A.FOLDER, writable=False)
    elif experiment == "compression":
        from jaxadv.experiments import compression

        if (out / compression.FILE).is_file():
            crows = results.read_rows(out / compression.FILE, compression.SCHEMA)
            tables.update(make_tables(crows, models))
        src = fp.get("from_targeted") or fp.get("from_untargeted")
        if src:  # the examples are the source run's (read only)
            rows = results.read_run_rows(src)
            store = A.ArrayStore(Path(src) / A.FOLDER, writable=False)
        if fp.get("from_targeted"):
            classes = C.MUSIC_CLASSES
    elif experiment == "robustness":
        from jaxadv.experiments.robustness import with_source

        src = fp.get("from_untargeted") or args.get("from_untargeted")
        keep = set(config.get("clips") or [])
        src_path = Path(src) if src else None
        tables.update(make_tables(with_source(rows, src_path, models, keep), models))
    else:
        tables.update(make_tables(rows, models))
    keep = set(config.get("clips") or [])
    rows = [r for r in rows if r["model"] in models and r["fname"] in keep]
    data = data if data is not None else (fp.get("data") or args.get("data"))
    # a run of models with labels of their own read its data with them (config.json has them)
    own = next((m.get("labels") for m in (config.get("models") or {}).values()
                if isinstance(m, dict) and m.get("labels")), None)  # fmt: skip
    clips = select_clips(data, args.get("split", "auto"), int(args.get("per_class") or 1),
                         int(args.get("seed", 0)), classes, [], labels=own)  # fmt: skip
    clips = [c for c in clips if c.fname in keep]
    missing = keep - {c.fname for c in clips}
    if missing:
        raise UserError(
            f"{out}: {len(missing)} clip(s) of the run are not in --data {data or '(the demo)'} "
            f"(e.g. {sorted(missing)[0]}); give the run's data folder with --data"
        )
    rate = next(
        (int(m["sample_rate"]) for m in (config.get("models") or {}).values()
         if isinstance(m, dict) and m.get("sample_rate")),
        C.SAMPLE_RATE,
    )  # fmt: skip
    waves = load_waves(clips, args.get("preset", "demo"), [], rate)
    return write(out, rows, tables, waves, store, embed=embed, per_page=per_page,
                 progress=progress, sample_rate=rate)  # fmt: skip
