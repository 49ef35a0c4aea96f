"""The embedded demo clips (jaxadv/demo/data) and the renderer that makes them."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import jaxadv.demo
from jaxadv import audio, datasets
from jaxadv import config as C
from jaxadv.demo import render as R

REPO = Path(__file__).resolve().parents[1]
MIN_RMS_DBFS = -45.0  # the renderer's rejection floor (render.MIN_RMS)


@pytest.fixture(scope="module")
def clips():
    return jaxadv.demo.eval_clips()


@pytest.fixture(scope="module")
def params():
    return R.read_params(jaxadv.demo.data_dir() / R.params_csv_name("eval"))


# ---------------------------------------------------------------------------------------------
# the committed clips
# ---------------------------------------------------------------------------------------------


def test_demo_folder_is_an_fsdkaggle2018_layout(clips):
    root = jaxadv.demo.data_dir()
    assert root == REPO / "jaxadv" / "demo" / "data"
    assert clips == datasets.read_test(root, check_files=True)
    assert sorted(p.name for p in (root / C.TEST_AUDIO_DIR).iterdir()) == sorted(
        c.fname for c in clips
    )
    assert {(c.usage, c.freesound_id, c.license) for c in clips} == {
        (R.USAGE, R.FREESOUND_ID, R.LICENSE)
    }
    assert "MIT license" in (root / "LICENSE-FluidR3.txt").read_text()


def test_six_clips_for_each_of_the_26_covered_labels(clips):
    counts = Counter(c.label for c in clips)
    assert len(clips) == 156
    assert set(counts.values()) == {6}
    assert sorted(counts) == sorted(R.COVERED_LABELS)
    assert len(R.COVERED_LABELS) == 26 and set(R.COVERED_LABELS) <= set(C.LABELS)
    assert set(C.MUSIC_CLASSES) <= set(counts)
    assert len(datasets.music_subset(clips)) == 36
    assert len(datasets.untargeted_subset(clips)) == 156  # 6 per covered class = all


def test_clips_are_32k_mono_16bit_nonsilent_unclipped(clips):
    for c in clips:
        info = sf.info(str(c.path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            32000,
            1,
            "FLAC",
            "PCM_16",
        ), c.fname
        x = audio.load_audio(c.path)
        assert 1.5 * 32000 <= x.shape[0] <= 3.0 * 32000, c.fname
        rms_db = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        assert rms_db >= MIN_RMS_DBFS, (c.fname, rms_db)
        # peak-normalised to 0.5 (-6 dBFS): far from clipping
        assert abs(np.max(np.abs(x)) - R.PEAK_LEVEL) <= 1.0 / 32768, c.fname
        assert x[-1] == 0.0  # the fade-out ends at zero: no click at the cut


def test_demo_size_under_8_mb():
    root = jaxadv.demo.data_dir()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 8_000_000, total


def test_package_data_covers_every_demo_file():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["jaxadv"]
    pkg = REPO / "jaxadv"
    for p in (pkg / "demo" / "data").rglob("*"):
        if p.is_file():
            rel = p.relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


# ---------------------------------------------------------------------------------------------
# the render parameters: distinct within eval, disjoint from train
# ---------------------------------------------------------------------------------------------


def _spec_of(row: dict[str, str]) -> R.RenderSpec:
    matches = [
        s
        for s in R.grid(row["label"], "eval")
        if (s.source.name, s.note, s.velocity, s.bend, s.hits, s.duration_ms)
        == (
            row["source"],
            int(row["note"]),
            int(row["velocity"]),
            int(row["bend"]),
            int(row["hits"]),
            int(row["duration_ms"]),
        )
    ]
    assert len(matches) == 1, row
    return matches[0]


def test_committed_clips_are_what_the_generator_specifies(clips, params):
    assert [r["fname"] for r in params] == [c.fname for c in clips]
    by_label: dict[str, list[R.RenderSpec]] = {}
    for row in params:
        spec = _spec_of(row)
        assert spec.fname(".flac") == row["fname"]
        assert (row["font"], int(row["bank"]), int(row["program"])) == (
            spec.source.font,
            spec.source.bank,
            spec.source.program,
        )
        assert int(row["stand_in"]) == spec.source.stand_in
        assert audio.num_samples(jaxadv.demo.data_dir() / "audio_test" / row["fname"]) == (
            spec.n_samples
        )
        by_label.setdefault(spec.label, []).append(spec)
    for label, specs in by_label.items():
        # no candidate was rejected as silent: the clips are the generator's first six
        assert specs == R.eval_candidates(label)[: R.EVAL_PER_CLASS], label
        # every clip of a label has its own (note, velocity, duration) and its own duration
        assert len({(s.note, s.velocity, s.duration_ms) for s in specs}) == 6, label
        assert len({s.duration_ms for s in specs}) == 6, label
        assert len({s.combo for s in specs}) == 6, label
    stand_ins = {r["label"] for r in params if r["stand_in"] == "1"}
    assert stand_ins == {"Gong", "Knock", "Fireworks"}


def test_eval_and_train_grids_are_disjoint():
    assert not set(R.VELOCITIES["eval"]) & set(R.VELOCITIES["train"])
    assert not set(R.DURATIONS_MS["eval"]) & set(R.DURATIONS_MS["train"])
    assert not set(R.DRUM_BENDS["eval"]) & set(R.DRUM_BENDS["train"])
    assert min(R.DURATIONS_MS["eval"]) == 1500 and max(R.DURATIONS_MS["eval"]) == 3000
    for label in R.COVERED_LABELS:
        ev, tr = R.grid(label, "eval"), R.grid(label, "train")
        assert not {s.combo for s in ev} & {s.combo for s in tr}, label
        assert not {(s.note, s.velocity, s.duration_ms) for s in ev} & {
            (s.note, s.velocity, s.duration_ms) for s in tr
        }
        for s in ev + tr:
            if not s.source.drum:  # pitched sources: eval and train notes never meet
                assert R.eval_note(s.note) == (s.split == "eval")
        # enough distinct train clips for the training issue (>= 120 per label)
        assert len({s.combo for s in tr}) >= 120, label
        assert R.train_candidates(label)[:5] == R.train_candidates(label)[:5]


def test_label_table_facts():
    # GM program numbers are 1-based; the MIDI program byte is one less (DEMO_AUDIO.md §4)
    assert R.SOURCES["Violin_or_fiddle"][0].program == 40
    assert R.SOURCES["Cello"][0].program == 42
    assert R.SOURCES["Gunshot_or_gunfire"][0].program == 127
    drums = {"Bass_drum": 36, "Snare_drum": 38, "Hi-hat": 42, "Tambourine": 54, "Cowbell": 56}
    for label, key in drums.items():
        assert all(s.drum and s.channel == 9 and key in s.notes for s in R.SOURCES[label])
    assert all(s.notes == (52,) and s.stand_in for s in R.SOURCES["Gong"])
    gs = {
        s.name: (s.bank, s.program) for lab in R.SOURCES for s in R.SOURCES[lab] if s.font == "GS"
    }
    assert gs == {
        "GS Dog": (1, 123),
        "GS Laughs": (1, 126),
        "GS Door Slam": (3, 124),
        "GS Wind Chimes": (5, 124),
        "GS Explosion": (3, 127),
        "GS Machine Gun": (1, 127),
        "GS Telephone 2": (1, 124),
    }


# ---------------------------------------------------------------------------------------------
# MIDI writer (exact bytes) and post-processing
# ---------------------------------------------------------------------------------------------


def test_vlq():
    cases = {0: "00", 0x40: "40", 0x7F: "7f", 0x80: "8100", 0x2000: "c000", 0x3FFF: "ff7f"}
    cases |= {0x4000: "818000", 0x0FFFFFFF: "ffffff7f"}
    for n, hexstr in cases.items():
        assert R.vlq(n).hex() == hexstr, n
    with pytest.raises(ValueError):
        R.vlq(1 << 28)


def test_midi_file_bytes():
    got = R.midi_file([(0, R.program_change(0, 40)), (0, R.note_on(0, 60, 100)),
                       (1500, R.note_off(0, 60))], end_tick=2000)  # fmt: skip
    track = (
        "00ff5103075300"  # tempo 480000 us/quarter
        "00c028"  # program 41 (GM, 1-based) = byte 40
        "00903c64"  # note on, middle C, velocity 100
        "8b5c803c40"  # delta 1500 = 0x8B 0x5C; note off, release velocity 64
        "8374ff2f00"  # delta 500 = 0x83 0x74; end of track
    ).replace(" ", "")
    header = "4d546864000000060000000101e0"  # MThd, 6, format 0, 1 track, 480 ppq
    expect = header + "4d54726b" + f"{len(track) // 2:08x}" + track
    assert got.hex() == expect


def test_clip_midi_bytes_for_a_drum_and_a_gs_effect():
    kit = R.SOURCES["Snare_drum"][1]  # Room kit, program 8, channel 10
    spec = R.RenderSpec("eval", "Snare_drum", kit, 38, 96, 1024, 2, 2000)
    ev = spec.midi()
    body = ev[22:]  # after MThd (14) + MTrk header (8)
    # tempo; reset controllers; kit program 8; pitch bend +1024 -> 9216 = 0x48 << 7 | 0x00
    assert body.startswith(bytes.fromhex("00ff510307530000b9790000c90800e90048"))
    # no bank select on the drum channel
    assert bytes.fromhex("b900") not in body
    # two strikes: onsets at 50 and 50 + (1600-50)/2 = 825 ms, each held 0.9 * 775 = 698 ms
    assert body.count(bytes([0x99, 38, 96])) == 2 and body.count(bytes([0x89, 38, 64])) == 2
    assert body.endswith(bytes.fromhex("b97800") + bytes.fromhex("0a") + b"\xff\x2f\x00")
    dog = R.RenderSpec("eval", "Bark", R.SOURCES["Bark"][0], 60, 80, 0, 1, 1500)
    head = "00b0790000b0000100b0200000c07b00e00040"  # bank 1 (CC0, CC32), Dog 123
    assert dog.midi()[22:].startswith(bytes.fromhex("00ff5103075300" + head + "32903c50"))


def test_finish_downmixes_fades_normalises_and_rejects_silence():
    sr = R.RENDER_RATE
    t = np.arange(sr * 3) / sr
    raw = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], 1)
    x = R.finish(raw, 2 * sr)
    assert x.shape == (2 * sr,) and x.dtype == np.float32
    assert np.max(np.abs(x)) == pytest.approx(R.PEAK_LEVEL, rel=1e-6)
    mono = raw[: 2 * sr].mean(axis=1)
    np.testing.assert_allclose(x[:1000], mono[:1000] * R.PEAK_LEVEL / np.abs(mono).max(), atol=1e-6)
    assert x[-1] == 0.0
    short = R.finish(raw[:1000], 2000)  # shorter than asked: zero-padded
    assert short.shape == (2000,) and not short[1000:].any()
    with pytest.raises(R.SilentRender, match="silent render"):
        R.finish(np.full((sr, 2), 5e-5), sr)
    sparse = np.zeros((3 * sr, 2))
    sparse[100] = 0.3  # one click in 3 s: RMS far below -45 dBFS after normalisation
    with pytest.raises(R.SilentRender, match="almost empty"):
        R.finish(sparse, 3 * sr)


# ---------------------------------------------------------------------------------------------
# rendering and the command line
# ---------------------------------------------------------------------------------------------


def _need_render_tools(banks=(R.DEFAULT_BANK,)) -> None:
    missing = R.missing_packages(banks)
    if missing and os.environ.get("CI") != "true":  # CI installs them: there a skip hides a gap
        pytest.skip(f"rendering needs the Debian packages {' '.join(missing)} (apt-get install)")


def test_every_bank_holds_the_presets_its_sources_ask_for():
    """fluidsynth silently plays another preset for a missing one (MuseScore General has no GS
    effects: its 'Dog' would be bank 0's program 123, a bird), so each bank's sources are read
    from its font's preset headers; .ci/run installs every bank's package."""
    _need_render_tools(R.BANKS)
    for name, bank in R.BANKS.items():
        R.check_presets(bank, R.COVERED_LABELS)
        assert set(R.bank_labels(bank)) <= set(R.COVERED_LABELS)
        presets = {f: R.font_presets(p) for f, p in bank.fonts.items()}
        assert all(k in presets["GM"] for k in [(128, kit) for kit in bank.kits]), name
    gs_only = {"Bark", "Laughter", "Knock", "Fireworks"}
    assert set(R.bank_labels("fluidr3")) == set(R.COVERED_LABELS)
    assert set(R.bank_labels("csound")) == set(R.COVERED_LABELS)
    for name in ("musescore", "timgm6mb", "opl3"):
        assert set(R.bank_labels(name)) == set(R.COVERED_LABELS) - gs_only, name
    # a bank that claims GS effects from a font without them is refused, naming the preset
    fake = dataclasses.replace(
        R.BANKS["musescore"], name="fake", fonts={**R.BANKS["musescore"].fonts,
                                                  "GS": R.BANKS["musescore"].fonts["GM"]},
    )  # fmt: skip
    with pytest.raises(R.RenderError, match=r"bank fake: GS Dog \(bank 1, program 123\) of Bark"):
        R.check_presets(fake, ["Bark"])
    # the only training banks are permissively licensed; the test-only banks are not trained on
    assert all(R.BANKS[b].train for b in R.TRAIN_BANKS)
    assert not any(R.BANKS[b].train for b in R.HELDOUT_BANKS)
    assert not set(R.TRAIN_BANKS) & set(R.HELDOUT_BANKS)


def test_font_presets_reads_a_small_riff_file(tmp_path):
    """A hand-made SF2 skeleton: INFO, an odd-sized sdta without a pad byte, pdta/phdr."""
    import struct

    def chunk(cid: bytes, data: bytes) -> bytes:
        return cid + struct.pack("<I", len(data)) + data

    def phdr(name: bytes, program: int, bank: int) -> bytes:
        return name.ljust(20, b"\0") + struct.pack("<HHHIII", program, bank, 0, 0, 0, 0)

    recs = phdr(b"Piano", 0, 0) + phdr(b"Dog", 123, 1) + phdr(b"Standard", 0, 128)
    pdta = b"pdta" + chunk(b"pbag", b"\0" * 4) + chunk(b"phdr", recs + phdr(b"EOP", 0, 0))
    body = (
        b"sfbk"
        + chunk(b"LIST", b"INFO" + chunk(b"ifil", b"\2\0\1\0"))
        + chunk(b"LIST", b"sdta" + chunk(b"smpl", b"\1\2\3"))
        + chunk(b"LIST", pdta)
    )
    path = tmp_path / "tiny.sf2"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert R.font_presets(path) == {(0, 0), (1, 123), (128, 0)}
    (tmp_path / "junk.sf2").write_bytes(b"not a soundfont")
    with pytest.raises(R.RenderError, match="junk.sf2' is not an SF2/SF3 soundfont"):
        R.font_presets(tmp_path / "junk.sf2")


def test_bank_grids_are_disjoint_across_splits_and_banks():
    for label in ("Cello", "Snare_drum", "Bark"):
        specs = {}
        for name in R.BANKS:
            if not R.get_bank(name).covers(label):
                continue
            ev, tr = R.grid(label, "eval", name), R.grid(label, "train", name)
            assert {s.bank for s in ev + tr} == {name}
            assert not {s.combo for s in ev} & {s.combo for s in tr}, (label, name)
            specs[name] = tr
        # the same MIDI from two banks is two clips with two names
        names = [{s.fname(".wav") for s in tr} for tr in specs.values()]
        assert sum(map(len, names)) == len(set().union(*names)), label
    # the default bank keeps its seeds, so the committed clips stay what they were
    assert R.train_candidates("Cello") == R.train_candidates("Cello", "fluidr3")
    assert R.eval_candidates("Cello")[0].bank == "fluidr3"
    assert R.train_candidates("Cello", "csound")[0].bank == "csound"
    opl3_kits = {s.source.program for s in R.grid("Snare_drum", "eval", "opl3")}
    assert opl3_kits == {0}  # the FM bank has one drum kit
    with pytest.raises(ValueError, match="unknown sound bank 'nope'"):
        R.grid("Cello", "eval", "nope")


def test_render_train_clips_from_several_banks(tmp_path):
    banks = ("fluidr3", "musescore", "csound")
    _need_render_tools(banks)
    out = tmp_path / "train"
    rows = R.render_split("train", out, per_class=1, labels=["Cello", "Bark"], banks=banks)
    # Bark: no GS effects in MuseScore General, so two banks; Cello: all three
    assert [(s.label, s.bank) for s, _ in rows] == [
        ("Cello", "fluidr3"), ("Cello", "musescore"), ("Cello", "csound"),
        ("Bark", "fluidr3"), ("Bark", "csound"),
    ]  # fmt: skip
    clips = datasets.read_train(out, check_files=True)
    assert [c.fname for c in clips] == [f for _, f in rows]
    xs = [audio.load_audio(c.path) for c in clips]
    for (spec, _), x in zip(rows, xs, strict=True):
        assert spec == R.train_candidates(spec.label, spec.bank)[0]
        assert x.shape == (spec.n_samples,)
        assert abs(np.max(np.abs(x)) - R.PEAK_LEVEL) <= 1 / 32768
    # the same MIDI clip from another bank is another recording: uncorrelated samples
    spec = rows[0][0]
    a, b = R.render_clip(spec), R.render_clip(dataclasses.replace(spec, bank="csound"))
    assert abs(float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))) < 0.5
    params = R.read_params(out / "render_train.csv")
    assert [p["sound_bank"] for p in params] == [s.bank for s, _ in rows]
    with pytest.raises(ValueError, match="'Bark' is not covered by the banks musescore"):
        R.render_split("train", tmp_path / "x", per_class=1, labels=["Bark"], banks=["musescore"])
    with pytest.raises(ValueError, match="banks must be distinct"):
        R.render_split("train", tmp_path / "x", per_class=1, banks=["csound", "csound"])


def test_render_train_clips(tmp_path):
    """Render two train clips with fluidsynth and the FluidR3 soundfonts (both needed in CI)."""
    _need_render_tools()
    out = tmp_path / "train"
    rows = R.render_split("train", out, per_class=1, labels=["Cello", "Bark"])
    clips = datasets.read_train(out, check_files=True)
    assert [c.label for c in clips] == ["Cello", "Bark"]
    assert all(c.manually_verified for c in clips)
    for (spec, fname), c in zip(rows, clips, strict=True):
        assert spec == R.train_candidates(c.label)[0] and fname == c.fname
        assert c.fname.endswith(".wav") and len(c.fname) == 12
        x = audio.load_audio(c.path)
        assert x.shape == (spec.n_samples,)
        assert abs(np.max(np.abs(x)) - R.PEAK_LEVEL) <= 1 / 32768
        assert 20 * np.log10(np.sqrt(np.mean(x**2))) >= MIN_RMS_DBFS
    # deterministic: a second render gives the same samples
    again = R.render_clip(rows[0][0])
    np.testing.assert_allclose(again, audio.load_audio(clips[0].path), atol=0.5 / 32768 + 1e-7)
    with pytest.raises(R.RenderError, match="already holds a train split"):
        R.render_split("train", out, per_class=1, labels=["Cello"])
    params = R.read_params(out / "render_train.csv")
    assert [p["fname"] for p in params] == [c.fname for c in clips]


def test_render_errors_name_what_is_missing(tmp_path):
    with pytest.raises(R.RenderError, match="nope.sf2.*fluid-soundfont-gm"):
        R.render_split("train", tmp_path, labels=["Cello"], fonts={"GM": tmp_path / "nope.sf2"})
    # fonts that exist, so that the missing synthesiser is what the error names
    fonts = {"GM": tmp_path / "gm.sf2", "GS": tmp_path / "gs.sf2"}
    for f in fonts.values():
        f.write_bytes(b"")
    with pytest.raises(
        R.RenderError, match="'no-such-synth' not found.*apt-get install fluidsynth"
    ):
        R.render_split("eval", tmp_path, labels=["Cello"], fonts=fonts, fluidsynth="no-such-synth")
    with pytest.raises(ValueError, match="'Meow' is not covered"):
        R.render_split("eval", tmp_path, labels=["Meow"])
    with pytest.raises(ValueError, match="unknown split"):
        R.grid("Cello", "test")


def test_cli_help_and_light_package_import():
    res = subprocess.run(
        [sys.executable, "-m", "jaxadv.demo.render", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and "--split" in res.stdout and "--per-class" in res.stdout
    code = (
        "import sys, jaxadv.demo as d; p = d.data_dir();"
        "assert 'jaxadv.demo.render' not in sys.modules;"
        "assert 'jaxadv.datasets' not in sys.modules; print(p)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert res.returncode == 0, res.stderr
