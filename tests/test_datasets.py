"""jaxadv.datasets on a tiny FSDKaggle2018-layout folder built in tmp_path."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxadv import audio, datasets
from jaxadv import config as C
from jaxadv.frontend import bucket_length

NATIVE = 44100  # the real data: 16-bit mono 44.1 kHz WAVs
TRAIN_HEADER = "fname,label,manually_verified"
TEST_HEADER = "fname,label,usage,freesound_id,license"

# (fname, label, manually_verified, seconds) -- real label names, some unverified
TRAIN_ROWS = [
    ("00044347.wav", "Hi-hat", 0, 0.4),
    ("001ca53d.wav", "Saxophone", 1, 1.0),
    ("0033e230.wav", "Glockenspiel", 1, 2.5),
    ("00353774.wav", "Cello", 1, 0.7),
    ("003b91e8.wav", "Cello", 0, 1.2),
    ("006f2f32.wav", "Hi-hat", 1, 4.5),
    ("0091fc7f.wav", "Cello", 1, 2.2),
    ("00cb787c.wav", "Flute", 1, 0.3),
]
TEST_ROWS = [
    ("00326aa9.wav", "Oboe", "Private", "355125", "Attribution", 1.5),
    ("0038a046.wav", "Bass_drum", "Public", "90621", "Creative Commons 0", 0.6),
    ("007759c4.wav", "Saxophone", "Private", "13406", "Attribution", 3.1),
]


def _tone(seconds: float, seed: int) -> np.ndarray:
    n = round(seconds * NATIVE)
    f0 = 200.0 + 50 * seed
    return (0.3 * np.sin(2 * np.pi * f0 * np.arange(n) / NATIVE)).astype(np.float32)


def _write_csv(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


@pytest.fixture
def root(tmp_path):
    """A dataset folder in the exact FSDKaggle2018 layout (44.1 kHz 16-bit mono WAVs)."""
    (tmp_path / "audio_train").mkdir()
    (tmp_path / "audio_test").mkdir()
    for i, (fname, _, _, sec) in enumerate(TRAIN_ROWS):
        sf.write(str(tmp_path / "audio_train" / fname), _tone(sec, i), NATIVE, subtype="PCM_16")
    for i, (fname, *_, sec) in enumerate(TEST_ROWS):
        sf.write(str(tmp_path / "audio_test" / fname), _tone(sec, i), NATIVE, subtype="PCM_16")
    _write_csv(tmp_path / "train.csv", TRAIN_HEADER, [r[:3] for r in TRAIN_ROWS])
    _write_csv(tmp_path / C.TEST_CSV, TEST_HEADER, [r[:5] for r in TEST_ROWS])
    return tmp_path


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def test_read_train(root):
    clips = datasets.read_train(root, check_files=True)
    assert [c.fname for c in clips] == [r[0] for r in TRAIN_ROWS]
    assert [c.label for c in clips] == [r[1] for r in TRAIN_ROWS]
    assert [c.manually_verified for c in clips] == [bool(r[2]) for r in TRAIN_ROWS]
    assert [c.label_index for c in clips] == [C.LABELS.index(r[1]) for r in TRAIN_ROWS]
    assert all(c.split == "train" and c.path == root / "audio_train" / c.fname for c in clips)
    assert [c.row for c in clips] == list(range(2, 2 + len(TRAIN_ROWS)))
    assert clips[0].usage is None and clips[0].fold is None


def test_read_train_accepts_iqbal_fold_column(root):
    rows = [(*r[:3], i % 5) for i, r in enumerate(TRAIN_ROWS)]
    _write_csv(root / "training.csv", TRAIN_HEADER + ",fold", rows)
    clips = datasets.read_train(root, csv_name="training.csv")
    assert [c.fold for c in clips] == [i % 5 for i in range(len(TRAIN_ROWS))]


def test_read_test_and_usage_filter(root):
    clips = datasets.read_test(root)
    assert [(c.fname, c.label, c.usage, c.freesound_id, c.license) for c in clips] == [
        r[:5] for r in TEST_ROWS
    ]
    assert all(c.split == "test" and c.manually_verified is None for c in clips)
    private = datasets.read_test(root, usage="Private")
    assert [c.fname for c in private] == ["00326aa9.wav", "007759c4.wav"]


def test_writers_round_trip(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    (out / "audio_train").mkdir()
    (out / "audio_test").mkdir()
    train, test = datasets.read_train(root), datasets.read_test(root)
    datasets.write_train_csv(out / "train.csv", train)
    datasets.write_test_csv(out / C.TEST_CSV, test)
    assert (out / "train.csv").read_text() == (root / "train.csv").read_text()
    assert (out / C.TEST_CSV).read_text() == (root / C.TEST_CSV).read_text()
    with pytest.raises(datasets.DatasetError, match="has no manually_verified"):
        datasets.write_train_csv(out / "x.csv", test)


def _error(fn, *words):
    with pytest.raises(datasets.DatasetError) as ei:
        fn()
    for w in words:
        assert w in str(ei.value), str(ei.value)
    return str(ei.value)


def test_reader_errors_name_the_file_and_row(root):
    _error(lambda: datasets.read_train(root / "nowhere"), "nowhere/train.csv", "does not exist")
    _write_csv(root / "train.csv", "fname,label", [("a.wav", "Cello")])
    _error(lambda: datasets.read_train(root), "train.csv", "['manually_verified']")
    _write_csv(root / "train.csv", TRAIN_HEADER, [("a.wav", "Cello", 1), ("b.wav", "Banjo", 0)])
    _error(lambda: datasets.read_train(root), "train.csv', line 3 (b.wav)", "'Banjo'")
    _write_csv(root / "train.csv", TRAIN_HEADER, [("a.wav", "Cello", "yes")])
    _error(lambda: datasets.read_train(root), "line 2", "manually_verified must be 0 or 1")
    _write_csv(root / "train.csv", TRAIN_HEADER, [("a.wav", "Cello", 1), ("a.wav", "Oboe", 1)])
    _error(lambda: datasets.read_train(root), "line 3", "duplicate file name 'a.wav'", "line 2")
    _write_csv(root / "train.csv", TRAIN_HEADER, [("a.wav", "Cello", 1, 7)])
    _error(lambda: datasets.read_train(root), "line 2", "different length")
    _write_csv(root / "train.csv", TRAIN_HEADER, [("a.wav", "Cello", 1)])
    _error(lambda: datasets.read_train(root, check_files=True), "1 file(s)", "['a.wav']")
    (root / "train.csv").write_text("")
    _error(lambda: datasets.read_train(root), "empty")
    for f in (root / "audio_test").iterdir():
        f.unlink()
    (root / "audio_test").rmdir()
    _error(lambda: datasets.read_test(root), "audio_test'", "does not exist", C.TEST_CSV)


def test_unknown_labels_can_be_skipped_by_name(root, caplog):
    """``unknown_labels="skip"``: the row is logged once and kept as a Failure; the rest loads."""
    rows = [r[:3] for r in TRAIN_ROWS]
    rows.insert(2, ("banjo.wav", "Banjo", 1))
    _write_csv(root / "train.csv", TRAIN_HEADER, rows)
    with pytest.raises(datasets.DatasetError, match="line 4 \\(banjo.wav\\): unknown label"):
        datasets.read_train(root)
    failures = []
    with caplog.at_level("WARNING", logger="jaxadv"):
        clips = datasets.read_train(root, unknown_labels="skip", failures=failures)
    assert [c.fname for c in clips] == [r[0] for r in TRAIN_ROWS]
    (f,) = failures
    assert f.clip.fname == "banjo.wav" and f.clip.label == "Banjo" and f.clip.label_index == -1
    assert "line 4 (banjo.wav): unknown label 'Banjo'" in f.message
    assert [r.getMessage().count("skipping banjo.wav") for r in caplog.records] == [1]
    test_rows = [r[:5] for r in TEST_ROWS] + [("x.wav", "Kazoo", "Public", "1", "CC0")]
    _write_csv(root / C.TEST_CSV, TEST_HEADER, test_rows)
    failures = []
    clips = datasets.read_test(root, unknown_labels="skip", failures=failures)
    assert len(clips) == len(TEST_ROWS) and [f.clip.fname for f in failures] == ["x.wav"]
    failures = []
    datasets.read_test(root, usage="Private", unknown_labels="skip", failures=failures)
    assert failures == []  # a Public row is not part of a Private read
    with pytest.raises(ValueError, match="unknown_labels must be one of"):
        datasets.read_test(root, unknown_labels="ignore")


def test_dataset_errors_are_user_errors():
    from jaxadv.cli import UserError

    assert issubclass(datasets.DatasetError, UserError)
    assert issubclass(datasets.DatasetError, ValueError)


# ---------------------------------------------------------------------------------------------
# subsets
# ---------------------------------------------------------------------------------------------


def _synthetic_train(tmp_path, per_class_verified=12, seed=0):
    """A train.csv over all 41 labels with verified and unverified rows interleaved at random."""
    rng = random.Random(seed)
    rows = [(lab, 1) for lab in C.LABELS for _ in range(per_class_verified)]
    rows += [(lab, 0) for lab in C.LABELS for _ in range(5)]
    rng.shuffle(rows)
    rows = [("unverified.wav", "Hi-hat", 0)] + [
        (f"{i:08x}.wav", lab, v) for i, (lab, v) in enumerate(rows)
    ]
    (tmp_path / "audio_train").mkdir(exist_ok=True)
    _write_csv(tmp_path / "train.csv", TRAIN_HEADER, rows)
    return datasets.read_train(tmp_path)


def test_authors_attack_list_410_and_the_409_bug(tmp_path):
    train = _synthetic_train(tmp_path)
    picked = datasets.authors_attack_list(train)
    assert len(picked) == 410
    assert all(c.manually_verified for c in picked)
    counts = {lab: sum(c.label == lab for c in picked) for lab in C.LABELS}
    assert set(counts.values()) == {10}
    # train.csv order is kept, and each class gets its *first* 10 verified rows
    rows = [c.row for c in picked]
    assert rows == sorted(rows)
    for lab in C.LABELS:
        verified = [c for c in train if c.label == lab and c.manually_verified]
        assert [c for c in picked if c.label == lab] == verified[:10]
    first_verified = next(c for c in train if c.manually_verified)
    assert picked[0] == first_verified
    dropped = datasets.authors_attack_list(train, drop_first=True)
    assert len(dropped) == 409 and dropped == picked[1:]
    assert len(datasets.authors_attack_list(train, per_class=9)) == 369
    with pytest.raises(datasets.DatasetError, match="needs train clips"):
        datasets.authors_attack_list([datasets.Clip("x.wav", "Oboe", 29, Path("x.wav"), "test")])


def test_untargeted_subset_is_deterministic_and_per_class(tmp_path):
    pool = datasets.authors_attack_list(_synthetic_train(tmp_path))
    a = datasets.untargeted_subset(pool)
    assert len(a) == 246 == C.NUM_CLASSES * C.UNTARGETED_PER_CLASS
    assert {sum(c.label == lab for c in a) for lab in C.LABELS} == {6}
    assert [c.row for c in a] == sorted(c.row for c in a)  # input order kept
    assert datasets.untargeted_subset(pool) == a  # same seed, same clips
    b = datasets.untargeted_subset(pool, seed=1)
    assert b != a and len(b) == 246
    # one class's draw does not depend on the other classes in the list
    cello = [c for c in pool if c.label == "Cello"]
    assert datasets.untargeted_subset(cello) == [c for c in a if c.label == "Cello"]
    first = datasets.untargeted_subset(pool, seed=None)
    assert first == [c for c in pool if sum(d.label == c.label for d in pool[: pool.index(c)]) < 6]
    with pytest.raises(ValueError, match="'Cello' has only 3 clip"):
        datasets.untargeted_subset(cello[:3])
    assert datasets.untargeted_subset(cello[:3], allow_fewer=True) == cello[:3]


def test_music_subset(root):
    clips = datasets.read_train(root)
    music = datasets.music_subset(clips)
    assert [c.label for c in music] == ["Cello", "Cello", "Cello"]
    assert set(C.MUSIC_CLASSES) == {
        "Bass_drum",
        "Cello",
        "Clarinet",
        "Oboe",
        "Snare_drum",
        "Violin_or_fiddle",
    }
    with pytest.raises(ValueError, match="unknown class"):
        datasets.music_subset(clips, ["Banjo"])


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------


def _expected_len(sec: float) -> int:
    return math.ceil(round(sec * NATIVE) * C.SAMPLE_RATE / NATIVE)


def test_iter_batches_buckets_lengths_and_padding(root):
    clips = datasets.read_train(root)
    sec = {r[0]: r[3] for r in TRAIN_ROWS}
    batches = list(datasets.iter_batches(clips, batch_size=3))
    seen = [c.fname for b in batches for c in b.clips]
    assert sorted(seen) == sorted(c.fname for c in clips)  # every clip exactly once
    buckets = []
    for b in batches:
        assert b.x.dtype == np.float32 and b.lengths.dtype == np.int32
        assert b.label_indices.dtype == np.int32
        assert b.x.shape == (len(b.clips), bucket_length(int(b.lengths.max())))
        assert len(b.clips) <= 3
        expect = [_expected_len(sec[c.fname]) for c in b.clips]
        assert b.lengths.tolist() == expect
        assert {bucket_length(n) for n in expect} == {b.x.shape[1]}  # one bucket per batch
        assert b.label_indices.tolist() == [c.label_index for c in b.clips]
        for row, c, n in zip(b.x, b.clips, b.lengths, strict=True):
            np.testing.assert_array_equal(row[:n], audio.load_audio(c.path))
            assert not row[n:].any()  # zero padding at the end
        buckets.append(b.x.shape[1])
    assert buckets == sorted(buckets)  # increasing bucket lengths
    # at 32 kHz: 0.3-1.2 s (5 clips) <= 65 536 samples; 2.2 and 2.5 s -> 131 072; 4.5 s -> 196 608
    assert [(b.x.shape[1], len(b.clips)) for b in batches] == [
        (65536, 3), (65536, 2), (131072, 2), (196608, 1)
    ]  # fmt: skip


def test_iter_batches_input_order_within_a_bucket(root):
    clips = datasets.read_train(root)
    short = [
        c.fname
        for c in clips
        if _expected_len(dict((r[0], r[3]) for r in TRAIN_ROWS)[c.fname]) <= 65536
    ]
    first_bucket = [c.fname for b in datasets.iter_batches(clips, 10) for c in b.clips][
        : len(short)
    ]
    assert first_bucket == short


def test_iter_batches_authors_path_lengths(root):
    clips = datasets.read_train(root)[:2]
    b = next(datasets.iter_batches(clips, 2, authors_path=True))
    for c, n in zip(b.clips, b.lengths, strict=True):
        assert n == audio.load_audio(c.path, authors_path=True).shape[0]


def test_bad_files_are_skipped_by_name_and_replaced(root):
    (root / "audio_train" / "0033e230.wav").write_bytes(b"garbage bytes, not a RIFF file")
    (root / "audio_train" / "00353774.wav").unlink()
    cut = root / "audio_train" / "001ca53d.wav"
    cut.write_bytes(cut.read_bytes()[:2000])  # truncated: header fine, data cut
    clips = datasets.read_train(root)
    failures: list[datasets.Failure] = []
    batches = list(datasets.iter_batches(clips, 2, on_error="skip", failures=failures))
    names = sorted(f.clip.fname for f in failures)
    assert names == ["001ca53d.wav", "0033e230.wav", "00353774.wav"]
    msgs = {f.clip.fname: f.message for f in failures}
    assert "0033e230.wav" in msgs["0033e230.wav"] and "unreadable" in msgs["0033e230.wav"]
    assert "no such file" in msgs["00353774.wav"]
    assert "truncated WAV" in msgs["001ca53d.wav"]
    loaded = [c.fname for b in batches for c in b.clips]
    assert sorted(loaded) == sorted(set(r[0] for r in TRAIN_ROWS) - set(names))
    # the truncated clip (2nd of the first bucket) was replaced by the next one of its bucket
    assert [c.fname for c in batches[0].clips] == ["00044347.wav", "003b91e8.wav"]
    assert [len(b.clips) for b in batches] == [2, 1, 1, 1]
    with pytest.raises(audio.AudioError, match="0033e230.wav"):
        list(datasets.iter_batches(clips, 2))


def test_load_batch_and_custom_loader(root):
    clips = datasets.read_test(root)
    b = datasets.load_batch(clips)
    assert b.x.shape == (3, bucket_length(_expected_len(3.1)))
    calls = []

    def loader(path):
        calls.append(path.name)
        return np.ones(1000, np.float32)

    b = datasets.load_batch(clips, loader=loader)
    assert b.lengths.tolist() == [1000] * 3 and b.x.shape == (3, 65536)
    assert calls == [c.fname for c in clips]

    def bad(path):
        return np.ones((2, 5), np.float32)

    failures = []
    assert datasets.load_batch(clips, loader=bad, on_error="skip", failures=failures) is None
    assert len(failures) == 3 and "loader returned shape (2, 5)" in failures[0].message
    with pytest.raises(ValueError, match="on_error"):
        datasets.load_batch(clips, on_error="ignore")
    with pytest.raises(ValueError, match="batch_size"):
        next(datasets.iter_batches(clips, 0))


def test_balanced_batches_and_balanced_iteration(root):
    """Near-equal batches per bucket, buckets in increasing length, input order kept."""
    lengths = [40000, 100000, 40000, 40000, 100000, 40000, 40000]
    plan = datasets.balanced_batches(lengths, 4)
    assert plan == [[0, 2], [3, 5, 6], [1, 4]]  # 5 short rows: 2 + 3, not 4 + 1
    with pytest.raises(ValueError, match="batch_size"):
        datasets.balanced_batches(lengths, 0)
    clips = datasets.read_train(root)
    waves = {c.path: np.ones(1000 * (i + 1), np.float32) for i, c in enumerate(clips)}
    got = list(datasets.iter_batches(clips, 3, loader=waves.__getitem__,
                                     length_fn=lambda p: len(waves[p]), balanced=True))  # fmt: skip
    sizes = [len(b.clips) for b in got]
    assert sizes == [len(b) for b in datasets.balanced_batches([len(w) for w in waves.values()], 3)]
    assert [c.fname for b in got for c in b.clips] == [c.fname for c in clips]
    loaded = datasets.load_waves(clips, loader=waves.__getitem__)
    assert list(loaded) == [c.fname for c in clips]
    preds = list(datasets.predict_batches(lambda x, n: np.asarray(n)[:, None] * np.ones((1, 2)),
                                          clips, 3, loader=waves.__getitem__))  # fmt: skip
    for b, p in preds:
        assert p.shape == (len(b.clips), 2) and (p[:, 0] == b.lengths).all()
