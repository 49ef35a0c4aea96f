"""jaxadv.audio: loading, resampling, writing, and a clear error for every kind of bad file."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import soundfile as sf

from jaxadv import audio
from jaxadv import config as C

LSB16 = 1.0 / 32768


def _noise(n: int, seed: int = 0, scale: float = 0.2) -> np.ndarray:
    return (
        (np.random.default_rng(seed).standard_normal(n) * scale).clip(-0.9, 0.9).astype(np.float32)
    )


def _band_energy(y: np.ndarray, sr: int, lo: float) -> float:
    """Fraction of the (Hann-windowed) spectrum's energy above ``lo`` Hz."""
    p = np.abs(np.fft.rfft(y * np.hanning(y.shape[0]))) ** 2
    f = np.fft.rfftfreq(y.shape[0], 1.0 / sr)
    return float(p[f > lo].sum() / p.sum())


# ---------------------------------------------------------------------------------------------
# round trips, downmix, resampling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subtype", "step"),
    [
        ("x.wav", None, LSB16),
        ("x.flac", None, LSB16),
        ("x.wav", "PCM_24", 2.0**-23),
        ("x.flac", "PCM_24", 2.0**-23),
    ],
)
def test_pcm_round_trip_within_half_a_step(tmp_path, name, subtype, step):
    x = _noise(8000)
    audio.write_audio(tmp_path / name, x, subtype=subtype)
    info = sf.info(str(tmp_path / name))
    assert (info.samplerate, info.channels, info.subtype) == (32000, 1, subtype or "PCM_16")
    y = audio.load_audio(tmp_path / name)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 0.5 * step + 1e-9
    # a second round trip is exact (the values are on the grid)
    audio.write_audio(tmp_path / name, y, subtype=subtype)
    np.testing.assert_array_equal(audio.load_audio(tmp_path / name), y)


def test_float_wav_round_trip_is_exact(tmp_path):
    x = _noise(5000) * 1e-3  # below one 16-bit step: only FLOAT keeps it
    audio.write_audio(tmp_path / "f.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "f.wav"), x)


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = _noise(4000, 1), _noise(4000, 2)
    audio.write_audio(tmp_path / "s.wav", np.stack([left, right], 1), subtype="FLOAT")
    y = audio.load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("native", [44100, 22050, 48000, 16000])
def test_resampling_keeps_a_sine_frequency_and_librosa_length(tmp_path, native):
    n = native  # one second
    t = np.arange(n) / native
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    sf.write(str(tmp_path / "sine.wav"), x, native, subtype="FLOAT")
    y = audio.load_audio(tmp_path / "sine.wav")
    assert (
        y.shape == (math.ceil(n * 32000 / native),) == (audio.num_samples(tmp_path / "sine.wav"),)
    )
    spec = np.abs(np.fft.rfft(y * np.hanning(y.shape[0])))
    peak_hz = np.fft.rfftfreq(y.shape[0], 1 / 32000)[np.argmax(spec)]
    assert peak_hz == pytest.approx(1000.0, abs=1.0)
    # amplitude preserved (band-limited resampler, 1 kHz is deep in the pass band)
    assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.5, abs=2e-3)


def test_resample_equals_librosa_soxr_hq():
    librosa = pytest.importorskip("librosa")
    x = _noise(44100 // 3, 5)
    for sr_in, sr_out in [(44100, 32000), (44100, 22050), (22050, 32000)]:
        ours = audio.resample(x, sr_in, sr_out)
        ref = librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq")
        np.testing.assert_array_equal(ours, ref)


def test_authors_path_band_limits_to_11025_hz(tmp_path):
    sf.write(str(tmp_path / "n.wav"), _noise(44100, 3), 44100, subtype="FLOAT")
    ours = audio.load_audio(tmp_path / "n.wav")
    theirs = audio.load_audio(tmp_path / "n.wav", authors_path=True)
    assert ours.shape == theirs.shape == (32000,)
    assert audio.num_samples(tmp_path / "n.wav", authors_path=True) == 32000
    # white noise up to 16 kHz: ~31 % of the energy lies above 11.025 kHz on the default path,
    # none (< 1e-10, measured 1e-14) after the authors' 22.05 kHz detour.
    assert _band_energy(ours, 32000, C.AUTHORS_LOAD_RATE / 2) > 0.25
    assert _band_energy(theirs, 32000, C.AUTHORS_LOAD_RATE / 2) < 1e-10


def test_mp3_and_ogg_are_readable(tmp_path):
    t = np.arange(32000) / 32000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for name in ["x.mp3", "x.ogg"]:
        sf.write(str(tmp_path / name), x, 32000)
        y = audio.load_audio(tmp_path / name)
        assert abs(y.shape[0] - 32000) <= 2 * 1152
        spec = np.abs(np.fft.rfft(y))
        assert np.fft.rfftfreq(y.shape[0], 1 / 32000)[np.argmax(spec)] == pytest.approx(440, abs=2)


# ---------------------------------------------------------------------------------------------
# bad files: every message names the file and the problem
# ---------------------------------------------------------------------------------------------


def _wav_bytes(tmp_path, x, sr=44100) -> bytes:
    p = tmp_path / "tmp_src.wav"
    audio.write_audio(p, x, sr)
    return p.read_bytes()


def _expect(path, exc, *words):
    with pytest.raises(exc) as ei:
        audio.load_audio(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    assert isinstance(ei.value, audio.AudioError) and isinstance(ei.value, ValueError)
    return msg


def test_missing_file(tmp_path):
    _expect(tmp_path / "nope.wav", audio.AudioMissingError, "no such file")
    with pytest.raises(FileNotFoundError):
        audio.load_audio(tmp_path / "nope.wav")
    _expect(tmp_path, audio.AudioMissingError, "not a regular file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    _expect(tmp_path / "empty.wav", audio.AudioFormatError, "empty file (0 bytes)")


def test_truncated_wav_is_detected(tmp_path):
    b = _wav_bytes(tmp_path, _noise(44100))
    (tmp_path / "cut.wav").write_bytes(b[: len(b) // 2])
    # libsndfile alone would silently return the first 22 039 frames
    assert sf.read(str(tmp_path / "cut.wav"))[0].shape[0] < 44100
    _expect(tmp_path / "cut.wav", audio.AudioFormatError, "truncated WAV", "88200 bytes")


def test_truncated_flac_is_detected(tmp_path):
    audio.write_audio(tmp_path / "full.flac", _noise(32000))
    b = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(b[: len(b) // 2])
    _expect(tmp_path / "cut.flac", audio.AudioFormatError, "truncated")


def test_truncated_mp3_is_detected(tmp_path):
    sf.write(str(tmp_path / "full.mp3"), _noise(44100), 44100)
    b = (tmp_path / "full.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(b[: len(b) // 2])
    _expect(tmp_path / "cut.mp3", audio.AudioFormatError, "truncated MP3", "44100 frames")


def test_random_bytes_with_wav_extension(tmp_path):
    (tmp_path / "junk.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    _expect(tmp_path / "junk.wav", audio.AudioFormatError, "unreadable or unsupported")


def test_text_renamed_flac(tmp_path):
    (tmp_path / "notes.flac").write_text("these are not audio samples\n" * 20)
    _expect(tmp_path / "notes.flac", audio.AudioFormatError, "unreadable or unsupported")


def test_valid_header_with_zero_frames(tmp_path):
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), 44100)
    assert sf.info(str(tmp_path / "zero.wav")).frames == 0
    _expect(tmp_path / "zero.wav", audio.AudioContentError, "no samples")
    with pytest.raises(audio.AudioContentError, match="no samples"):
        audio.num_samples(tmp_path / "zero.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_wav_with_nan_or_inf(tmp_path, bad):
    x = _noise(1000)
    x[[10, 500]] = bad
    sf.write(str(tmp_path / "bad.wav"), x, 32000, subtype="FLOAT")
    _expect(tmp_path / "bad.wav", audio.AudioContentError, "2 NaN/Inf")


def test_streaming_wav_with_unknown_data_size_loads(tmp_path):
    """A data chunk size of 0xFFFFFFFF (streamed WAV) is not mistaken for truncation."""
    x = _noise(2000)
    b = bytearray(_wav_bytes(tmp_path, x, sr=32000))
    i = b.index(b"data")
    b[i + 4 : i + 8] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "stream.wav").write_bytes(bytes(b))
    y = audio.load_audio(tmp_path / "stream.wav")
    assert np.max(np.abs(y - x)) <= 0.5 * LSB16 + 1e-9


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def test_write_refuses_nan_and_inf(tmp_path):
    for bad in (np.nan, np.inf):
        x = _noise(100)
        x[3] = bad
        with pytest.raises(audio.AudioContentError, match="refusing to write 1 NaN/Inf") as ei:
            audio.write_audio(tmp_path / "o.wav", x)
        assert "o.wav" in str(ei.value)
    assert not (tmp_path / "o.wav").exists()


def test_write_clips_pcm_with_a_warning_but_not_float(tmp_path):
    x = np.array([0.0, 0.5, 1.5, -2.0], np.float32)
    with pytest.warns(UserWarning, match=r"clipped 2 sample\(s\).*peak 2"):
        audio.write_audio(tmp_path / "c.flac", x)
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "c.flac"), [0, 0.5, 1 - LSB16, -1])
    audio.write_audio(tmp_path / "c.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(str(tmp_path / "c.wav"), dtype="float32")[0], x)


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(audio.AudioError, match="cannot write extension '.mp3'"):
        audio.write_audio(tmp_path / "x.mp3", _noise(10))
    with pytest.raises(audio.AudioError, match="subtype 'FLOAT' not supported for FLAC"):
        audio.write_audio(tmp_path / "x.flac", _noise(10), subtype="float")
    with pytest.raises(audio.AudioContentError, match="non-empty"):
        audio.write_audio(tmp_path / "x.wav", np.zeros(0))
    with pytest.raises(audio.AudioError, match="sample_rate"):
        audio.write_audio(tmp_path / "x.wav", _noise(10), sample_rate=0)
