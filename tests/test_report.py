"""The run report: ``report.html`` written by the command equals the one ``python -m jaxadv.report``
rebuilds from the folder; its tables are the experiment's summaries; every medium resolves; the
perturbation players hold the real perturbation at the stated gain; and in headless Chromium the
page renders its tables, figures and audio players and filters and paginates from its address."""

from __future__ import annotations

import html.parser
import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from jaxadv import audio, report
from jaxadv.experiments import arrays, results, untargeted


@pytest.fixture(scope="module")
def run(untargeted_run):
    return untargeted_run.out


class Page(html.parser.HTMLParser):
    """The elements of a page a test looks at (tables, images, audio, example rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.images: list[str] = []
        self.audio: list[str] = []
        self.examples: list[dict[str, str]] = []
        self.text: list[str] = []
        self._json = False
        self.json = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-stem" in a:
            self.tables.append(a["data-stem"])
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "audio":
            self.audio.append(a.get("src", ""))
        elif tag == "tr" and a.get("class") == "example":
            self.examples.append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
        elif tag == "script" and a.get("id") == "example-data":
            self._json = True

    def handle_endtag(self, tag):
        self._json = False if tag == "script" else self._json

    def handle_data(self, data):
        if self._json:
            self.json += data
        self.text.append(data)


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


def test_the_command_writes_a_report_of_its_tables_figures_and_examples(run):
    page = parse((run / "report.html").read_text())
    rows = results.read_rows(run / "results.csv")
    stems = ["clean_accuracy", *untargeted.tables_of(rows, ["vgg13", "dense_wav"])]
    assert page.tables == stems
    figs = sorted(p.name for p in run.glob("*.png"))
    assert sorted(page.images) == figs and "figure1.png" in figs
    examples = json.loads(page.json)
    assert len(examples) == len(rows) > 0  # every row has both waveforms
    for e in examples:
        for k in ("clean", "adv", "delta", "spec"):
            assert (run / e[k]).is_file(), e[k]
    # the adversarial players play the run's own float WAV files where it wrote them
    by_key = {results.row_key(r): r for r in rows}
    for e in examples:
        assert e["adv"] == by_key[(e["model"], e["attack"], e["fname"], e["target"])]["adv_file"]
    assert "python -m jaxadv.experiments.untargeted" in "".join(page.text)


def test_the_perturbation_player_is_the_perturbation_at_the_stated_gain(run):
    examples = json.loads(parse((run / "report.html").read_text()).json)
    store = arrays.ArrayStore(run / arrays.FOLDER, writable=False)
    for e in examples[:6]:
        adv = store[(e["model"], e["attack"], e["fname"], e["target"])]
        clean = audio.load_audio(run / e["clean"])[: len(adv)]
        delta = adv.astype(np.float64) - clean
        loud = audio.load_audio(run / e["delta"]).astype(np.float64)
        assert len(loud) == len(adv)
        want = np.clip(delta * 10 ** (e["gain_db"] / 20), -1, 1)
        # 16-bit file of the amplified perturbation; the clean clip is a 24-bit file
        assert np.abs(loud - want).max() < 2e-4 + 10 ** (e["gain_db"] / 20) * 2**-23
        rms = 20 * math.log10(np.sqrt(np.mean(loud**2)))
        peak = 20 * math.log10(np.abs(loud).max())
        assert peak <= report.PERTURBATION_PEAK_DBFS + 0.01
        assert rms == pytest.approx(report.PERTURBATION_RMS_DBFS, abs=0.05) or peak == (
            pytest.approx(report.PERTURBATION_PEAK_DBFS, abs=0.01)
        )


def test_perturbation_gain_closed_form():
    t = np.arange(32000) / 32000
    sine = 1e-4 * np.sin(2 * np.pi * 440 * t)  # RMS 1e-4/sqrt(2), peak 1e-4
    assert report.perturbation_gain_db(sine) == pytest.approx(-20 + 80 + 20 * math.log10(2**0.5))
    click = np.zeros(32000)
    click[100] = 1e-3  # crest factor 45 dB: the peak limit sets the gain
    assert report.perturbation_gain_db(click) == pytest.approx(-1 + 60)
    assert report.perturbation_gain_db(np.zeros(10)) == 0.0


def test_the_log_mel_matches_librosa():
    import librosa

    x = np.random.default_rng(0).standard_normal(20000).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=x, sr=32000, n_fft=1024, hop_length=320, n_mels=64)
    np.testing.assert_allclose(report._log_mel(x), 10 * np.log10(np.maximum(ref, 1e-12)), atol=1e-3)


def test_regenerating_from_the_folder_gives_the_same_page(run, tmp_path):
    from jaxadv.report.__main__ import main

    copy = tmp_path / run.name  # the page's title names the folder
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    shutil.rmtree(copy / report.FILES)
    main([str(copy), "--no-progress"])
    assert (copy / "report.html").read_text() == (run / "report.html").read_text()
    for p in (run / report.FILES).rglob("*"):
        if p.is_file():
            assert (copy / p.relative_to(run)).read_bytes() == p.read_bytes(), p


def test_an_embedded_report_is_one_file(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    path = report.regenerate(copy, embed=True, per_page=5, progress=False)
    page = parse(path.read_text())
    examples = json.loads(page.json)
    media = [e[k] for e in examples for k in ("clean", "adv", "delta", "spec")]
    assert media and all(m.startswith("data:") for m in media + page.images)


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    from jaxadv.report.__main__ import main

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a jaxadv run folder" in err[0]
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]  # nothing written


# --- in a real browser ------------------------------------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def browse(page: Path, query: str = "", screenshot: Path | None = None) -> Page:
    """The page's DOM after its scripts ran, from headless Chromium (``--dump-dom``)."""
    exe = chromium()
    if exe is None:
        if os.environ.get("CI") == "true":  # CI installs it: there a skip would hide a gap
            pytest.fail("CI needs the Debian package chromium (.ci/run installs it)")
        pytest.skip("needs Chromium (Debian package chromium) for the browser test")
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--hide-scrollbars", "--allow-file-access-from-files", "--virtual-time-budget=5000",
        f"--user-data-dir={page.parent / '.chromium'}",
    ]  # fmt: skip
    url = page.resolve().as_uri() + query
    if screenshot is not None:
        subprocess.run([*cmd, "--window-size=1400,1000", f"--screenshot={screenshot}", url],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    out = subprocess.run([*cmd, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    return parse(out.stdout)


def test_the_page_in_a_real_browser_renders_filters_and_paginates(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    report.regenerate(copy, per_page=3, progress=False)
    rows = results.read_rows(copy / "results.csv")
    dom = browse(copy / "report.html", screenshot=tmp_path / "shot.png")
    assert (tmp_path / "shot.png").stat().st_size > 20000
    assert len(dom.tables) == 6 and len(dom.images) >= 2
    assert len(dom.examples) == 3 and len(dom.audio) == 9  # page 1: 3 examples × 3 players
    for src in dom.audio + dom.images:  # every source resolves to a file of the folder
        assert src and not src.startswith(("http:", "https:"))
        assert (copy / unquote(src)).is_file(), src
    assert f"{len(rows)} of {len(rows)} examples" in "".join(dom.text)
    # filtered from the address, as the page writes it there when a filter changes
    want = [r for r in rows if r["model"] == "dense_wav" and r["attack"] == "cw"]
    dom = browse(copy / "report.html", "?model=dense_wav&attack=cw")
    assert len(dom.examples) == min(3, len(want)) > 0
    assert all(e["model"] == "dense_wav" and e["attack"] == "cw" for e in dom.examples)
    assert f"{len(want)} of {len(rows)} examples" in "".join(dom.text)
    ok = [r for r in rows if r["model"] == "vgg13" and r["success"]]
    dom = browse(copy / "report.html", "?model=vgg13&success=1&page=2")
    assert len(dom.examples) == min(3, len(ok) - 3) > 0
    assert all(e["success"] == "1" and e["model"] == "vgg13" for e in dom.examples)
    assert f"page 2 of {math.ceil(len(ok) / 3)}" in "".join(dom.text)


def test_help_and_a_light_import():
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "jaxadv.report", "--help"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and "--embed" in res.stdout and "RUN" in res.stdout
    code = (
        "import sys, jaxadv.report;"
        "assert not {'jinja2', 'matplotlib', 'librosa'} & set(sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
