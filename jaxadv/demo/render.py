"""Render the demo clips: real sampled instruments and effects from soundfonts (sound banks).

The committed eval clips and the default bank are the MIT-licensed FluidR3 soundfonts; other
banks (:data:`BANKS`: MuseScore General, csound's GM bank, and the test-only TimGM6mb and OPL-3
FM) render the same MIDI clips from other recordings (``--banks``).

``python -m jaxadv.demo.render --split {eval,train} --out DIR`` writes an FSDKaggle2018-layout
folder (see :mod:`jaxadv.datasets`) of mono 16-bit clips at 32 kHz for the 26 FSDKaggle2018 labels
the fonts cover (DEMO_AUDIO.md §4-5): 22 from General MIDI ``FluidR3_GM.sf2`` (bank 0 and the
drum kits on MIDI channel 10) and 4 from the Roland GS effects in ``FluidR3_GS.sf2`` (Bark,
Laughter, Knock, Fireworks). **Stand-ins:** GM has no gong (Gong = the Chinese cymbal, drum key
52); Knock is the GS "Door Slam" and Fireworks the GS "Explosion".

How one clip is made (:func:`render_clip`): a one-track standard MIDI file (written here with the
standard library: 480 ticks per quarter at 480 000 us per quarter, so one tick = 1 ms) resets the
controllers, selects bank and program (GM program numbers are 1-based, the program byte is
``program - 1``; drum kits are programs on channel index 9), sets the pitch bend, plays ``hits``
notes starting 50 ms in and ending by 80 % of the clip, and silences everything at the clip's end
(CC 120). The fluidsynth CLI renders it with reverb and chorus off (:func:`fluidsynth_command`;
rendering is deterministic, one process per clip so a clip never depends on its neighbours).
The float stereo output is averaged to mono, cut (or zero-padded) to the clip duration (the
release tail beyond it is dropped), given a 10 ms raised-cosine fade-out against a click, and
peak-normalised to 0.5 (-6.02 dBFS, headroom for perturbations inside the [-1, 1] box). A render
whose raw peak is below -80 dBFS (silent, e.g. a key the preset does not map) or whose normalised
RMS is below -45 dBFS (an almost empty clip) is rejected and the next candidate is rendered.

**Disjoint splits.** Every clip is a :class:`RenderSpec` ``(source, note, velocity, bend, hits,
duration)``. The splits draw from disjoint value sets, so no eval combination occurs in train:

* velocity: eval {64, 80, 96, 112}; train {56, 72, 88, 104, 120};
* duration: eval 1.50-3.00 s in 0.25 s steps; train 1.125-3.875 s in 0.25 s steps (odd eighths);
* pitched instruments and effects (bend 0): eval notes are the keys divisible by 4, train the
  others, within each source's key range;
* drum kits (the key selects the drum, so keys are shared): eval pitch bends {-1024, 0, +1024},
  train {-1536, -512, +512, +1536} (of +/-8192 = +/-2 semitones), over 7 GM kits.

``eval`` takes 6 clips per label, chosen greedily to differ in as many fields as possible
(committed under ``jaxadv/demo/data``); ``train`` takes ``--per-class`` clips per label from a
seeded shuffle of its grid (rendered on demand, not committed).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxadv import audio, datasets
from jaxadv import config as C

log = logging.getLogger(__name__)


# --- sound banks: a name for a set of soundfonts (Debian packages) ------------------------------
@dataclasses.dataclass(frozen=True)
class Bank:
    """A sound bank: the soundfont files a clip's source roles resolve to, and what they may do.

    Attributes:
      name: the bank's name (``--banks``).
      fonts: source role (``"GM"`` bank-0 presets and drum kits, ``"GS"`` Roland GS effects) ->
        soundfont file; a bank without a ``"GS"`` font does not cover the GS-only labels.
      packages: role -> the Debian package that installs the file.
      licence: the licence of the audio it renders (the CSV ``license`` column).
      kits: the GM drum kits (bank 128 programs) it holds; the others are skipped.
      train: True when the licence lets models trained on it ship under the project's MIT licence
        (MIT, CC0, public domain); False: test data only, never committed or trained on.
    """

    name: str
    fonts: dict[str, Path]
    packages: dict[str, str]
    licence: str
    kits: tuple[int, ...]
    train: bool

    def covers(self, label: str) -> bool:
        return bool(bank_sources(self, label))


_SF2, _SF3 = Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3")
_GM_KITS = (0, 8, 16, 24, 25, 32, 40)  # Standard, Room, Power, Electronic, TR-808, Jazz, Brush
BANKS: dict[str, Bank] = {
    "fluidr3": Bank(
        "fluidr3",
        {"GM": _SF2 / "FluidR3_GM.sf2", "GS": _SF2 / "FluidR3_GS.sf2"},
        {"GM": "fluid-soundfont-gm", "GS": "fluid-soundfont-gs"},
        "MIT (FluidR3 soundfont by Frank Wen)",
        _GM_KITS,
        True,
    ),
    # FluidR3 Mono, MuseScore Drumline (CC0) and public-domain piano samples: many of its presets
    # are FluidR3's samples (other loops, filters and envelopes), some are new recordings.
    "musescore": Bank(
        "musescore",
        {"GM": _SF3 / "MuseScore_General_Lite.sf3"},
        {"GM": "musescore-general-soundfont-small"},
        "MIT (MuseScore_General by S. Christian Collins; parts CC0 and public domain)",
        _GM_KITS,
        True,
    ),
    # csound's small GM + GS bank (public domain): recordings other than FluidR3's, but it shares
    # many samples with TimGM6mb (measured: waveform correlation ~1.0 on violin, clarinet, snare,
    # bass drum), so a model trained on it is not tested on TimGM6mb alone (see jaxadv/demo/data).
    "csound": Bank(
        "csound",
        {"GM": _SF2 / "sf_GMbank.sf2", "GS": _SF2 / "sf_GMbank.sf2"},
        {"GM": "csound-soundfont", "GS": "csound-soundfont"},
        "public domain (csound sf_GMbank.sf2)",
        _GM_KITS,
        True,
    ),
    # Test-only banks (GPL / CC-BY-SA: never trained on, never committed; rendered on demand).
    "timgm6mb": Bank(
        "timgm6mb",
        {"GM": _SF2 / "TimGM6mb.sf2"},
        {"GM": "timgm6mb-soundfont"},
        "GPL-2 (TimGM6mb by Tim Brechbill): test data only",
        _GM_KITS,
        False,
    ),
    # FM synthesis (an OPL3 chip's sounds), no samples at all: the most foreign source here.
    "opl3": Bank(
        "opl3",
        {"GM": _SF2 / "OPL-3_FM_128M.sf2"},
        {"GM": "opl3-soundfont"},
        "CC-BY-SA-4.0 (OPL-3 FM 128M by Zandro Reveille): test data only",
        (0,),
        False,
    ),
}
DEFAULT_BANK: str = "fluidr3"  # the committed eval clips and the original training data
TRAIN_BANKS: tuple[str, ...] = ("fluidr3", "musescore", "csound")  # the demo models' training data
HELDOUT_BANKS: tuple[str, ...] = ("opl3", "timgm6mb")  # the generalisation test (jaxadv.train.demo)
# the fluidr3 bank's fonts, kept under their old names for the --gm-font/--gs-font overrides
FONT_PATHS: dict[str, Path] = BANKS[DEFAULT_BANK].fonts
FONT_PACKAGES: dict[str, str] = BANKS[DEFAULT_BANK].packages


def missing_packages(banks: Iterable[str | Bank] = (DEFAULT_BANK,)) -> list[str]:
    """The Debian packages rendering from ``banks`` needs that this machine lacks (sorted)."""
    missing = [] if shutil.which("fluidsynth") else ["fluidsynth"]
    for b in map(get_bank, banks):
        missing += [b.packages[f] for f, path in b.fonts.items() if not path.is_file()]
    return sorted(set(missing))


def get_bank(bank: str | Bank) -> Bank:
    if isinstance(bank, Bank):
        return bank
    if bank not in BANKS:
        raise ValueError(f"unknown sound bank {bank!r}; choose from {sorted(BANKS)}")
    return BANKS[bank]


# --- rendering ----------------------------------------------------------------------------------
RENDER_RATE: int = C.SAMPLE_RATE  # fluidsynth renders directly at 32 kHz
FLUIDSYNTH_GAIN: float = 0.5  # float output, so no clipping; the clips are normalised afterwards
PEAK_LEVEL: float = 0.5  # -6.02 dBFS peak after normalisation
SILENT_PEAK: float = 1e-4  # raw render peak below -80 dBFS = silent
MIN_RMS: float = 10 ** (-45 / 20)  # normalised clip RMS below -45 dBFS = (almost) empty
LEAD_MS: int = 50  # first note-on
SUSTAIN_END: float = 0.8  # notes end by this fraction of the clip; the rest is release tail
FADE_MS: int = 10  # raised-cosine fade-out at the cut
TICKS_PER_QUARTER: int = 480
TEMPO_US: int = 480_000  # us per quarter -> 1 tick = 1 ms
DRUM_CHANNEL: int = 9  # MIDI channel 10
MELODIC_CHANNEL: int = 0
USAGE: str = "Private"  # test-CSV usage column of the eval clips
FREESOUND_ID: str = "0"  # no Freesound id
LICENSE: str = BANKS[DEFAULT_BANK].licence

# --- the split rules (see the module docstring) ---------------------------------------------------
SPLITS: tuple[str, ...] = ("eval", "train")
VELOCITIES: dict[str, tuple[int, ...]] = {
    "eval": (64, 80, 96, 112),
    "train": (56, 72, 88, 104, 120),
}
DURATIONS_MS: dict[str, tuple[int, ...]] = {
    "eval": tuple(range(1500, 3001, 250)),
    "train": tuple(range(1125, 3876, 250)),
}
DRUM_BENDS: dict[str, tuple[int, ...]] = {
    "eval": (-1024, 0, 1024),
    "train": (-1536, -512, 512, 1536),
}
EVAL_PER_CLASS: int = 6
TRAIN_PER_CLASS: int = 100
EVAL_CANDIDATES: int = 24  # greedy-ordered eval candidates per label (6 used, the rest spares)


def eval_note(note: int) -> bool:
    """The note rule for pitched sources: keys divisible by 4 are eval notes, the rest train."""
    return note % 4 == 0


@dataclasses.dataclass(frozen=True)
class Source:
    """One soundfont preset.

    Attributes:
      name: human-readable name (GM numbers 1-based, as in the GM tables).
      font: ``"GM"`` (FluidR3_GM.sf2) or ``"GS"`` (FluidR3_GS.sf2).
      bank: MIDI bank (CC 0); 128 marks a GM drum kit, played on channel 10.
      program: MIDI program byte, 0-based (GM program - 1, or the drum-kit number).
      notes: MIDI keys it may play (the pitch range; for drum kits the drum keys).
      hits: allowed numbers of strikes per clip.
      stand_in: True when the preset only approximates the label.
    """

    name: str
    font: str
    bank: int
    program: int
    notes: tuple[int, ...]
    hits: tuple[int, ...] = (1,)
    stand_in: bool = False

    @property
    def drum(self) -> bool:
        return self.bank == 128

    @property
    def channel(self) -> int:
        return DRUM_CHANNEL if self.drum else MELODIC_CHANNEL


def _gm(name: str, gm_program: int, lo: int, hi: int, hits: tuple[int, ...] = (1,)) -> Source:
    """A General MIDI bank-0 preset by its 1-based GM program number, keys ``lo..hi``."""
    return Source(
        f"GM {gm_program} {name}", "GM", 0, gm_program - 1, tuple(range(lo, hi + 1)), hits
    )


_FX_KEYS = (54, 66)  # effects are pitched by +/-6 semitones around their root key (60)
# GM drum kits (bank 128; the Orchestra kit maps timpani onto 41-53, so it is left out).
DRUM_KITS: tuple[tuple[int, str], ...] = (
    (0, "Standard"),
    (8, "Room"),
    (16, "Power"),
    (24, "Electronic"),
    (25, "TR-808"),
    (32, "Jazz"),
    (40, "Brush"),
)


def _drums(
    what: str, keys: tuple[int, ...], hits: tuple[int, ...], stand_in: bool = False
) -> tuple[Source, ...]:
    """The same drum keys in each of the GM drum kits (kit = program on channel 10)."""
    return tuple(
        Source(f"GM drum kit {kit_name} ({what})", "GM", 128, kit, keys, hits, stand_in)
        for kit, kit_name in DRUM_KITS
    )


def _gs(
    name: str, bank: int, program: int, hits: tuple[int, ...] = (1,), stand_in: bool = False
) -> Source:
    """A Roland GS effect of FluidR3_GS.sf2 at (bank, 0-based program), pitched over _FX_KEYS."""
    keys = tuple(range(_FX_KEYS[0], _FX_KEYS[1] + 1))
    return Source(f"GS {name}", "GS", bank, program, keys, hits, stand_in)


# label -> sources (DEMO_AUDIO.md §4). Key ranges are the instruments' usual playing ranges.
SOURCES: dict[str, tuple[Source, ...]] = {
    "Acoustic_guitar": (_gm("Acoustic Guitar (nylon)", 25, 40, 76),),
    "Applause": (_gm("Applause", 127, *_FX_KEYS),),
    "Bark": (_gs("Dog", 1, 123, hits=(1, 2)),),
    "Bass_drum": _drums("keys 35/36 bass drums", (35, 36), (1, 2)),
    "Cello": (_gm("Cello", 43, 36, 72),),
    "Chime": (_gm("Tubular Bells", 15, 55, 79), _gs("Wind Chimes", 5, 124)),
    "Clarinet": (_gm("Clarinet", 72, 50, 84),),
    "Cowbell": _drums("key 56 cowbell", (56,), (1, 2, 3)),
    "Double_bass": (_gm("Contrabass", 44, 28, 55),),
    "Electric_piano": (_gm("Electric Piano 1", 5, 36, 84),),
    "Fireworks": (_gs("Explosion", 3, 127, hits=(1, 2), stand_in=True),),
    "Flute": (_gm("Flute", 74, 60, 93),),
    "Glockenspiel": (_gm("Glockenspiel", 10, 72, 100),),
    "Gong": _drums("key 52 Chinese cymbal", (52,), (1,), stand_in=True),
    "Gunshot_or_gunfire": (
        _gm("Gunshot", 128, *_FX_KEYS, hits=(1, 2, 3)),
        _gs("Machine Gun", 1, 127),
    ),
    "Harmonica": (_gm("Harmonica", 23, 60, 84),),
    "Hi-hat": _drums("keys 42/44/46 hi-hats", (42, 44, 46), (1, 2, 3, 4)),
    "Knock": (_gs("Door Slam", 3, 124, hits=(2, 3), stand_in=True),),
    "Laughter": (_gs("Laughs", 1, 126),),
    "Oboe": (_gm("Oboe", 69, 58, 86),),
    "Saxophone": (_gm("Alto Sax", 66, 49, 80),),
    "Snare_drum": _drums("keys 38/40 snares", (38, 40), (1, 2, 3)),
    "Tambourine": _drums("key 54 tambourine", (54,), (1, 2, 3, 4)),
    "Telephone": (_gm("Telephone Ring", 125, *_FX_KEYS), _gs("Telephone 2", 1, 124)),
    "Trumpet": (_gm("Trumpet", 57, 55, 82),),
    "Violin_or_fiddle": (_gm("Violin", 41, 55, 91),),
}
COVERED_LABELS: tuple[str, ...] = tuple(sorted(SOURCES))


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """Everything that defines one clip. ``bend`` is the pitch-bend offset (+/-8192 = +/-2 st)."""

    split: str
    label: str
    source: Source
    note: int
    velocity: int
    bend: int
    hits: int
    duration_ms: int
    bank: str = DEFAULT_BANK

    @property
    def combo(self) -> tuple:
        """The identity of a clip's sound, compared across splits."""
        s = self.source
        return (
            *(() if self.bank == DEFAULT_BANK else (self.bank,)),
            s.font,
            s.bank,
            s.program,
            self.note,
            self.velocity,
            self.bend,
            self.hits,
            self.duration_ms,
        )

    @property
    def n_samples(self) -> int:
        return self.duration_ms * RENDER_RATE // 1000

    def fname(self, ext: str) -> str:
        """FSDKaggle2018-style name: 8 hex digits (a hash of the spec) and the extension."""
        key = "|".join(map(str, (self.split, self.label, *self.combo)))
        return hashlib.sha1(key.encode()).hexdigest()[:8] + ext

    def midi(self) -> bytes:
        """The one-track MIDI file that renders this clip."""
        return clip_midi(self)


# ---------------------------------------------------------------------------------------------
# Standard MIDI files
# ---------------------------------------------------------------------------------------------


def vlq(n: int) -> bytes:
    """MIDI variable-length quantity: 7 bits per byte, most significant first, high bit = more."""
    if not 0 <= n < 1 << 28:
        raise ValueError(f"MIDI delta time {n} out of range")
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_file(events: Iterable[tuple[int, bytes]], *, end_tick: int | None = None) -> bytes:
    """A format-0 standard MIDI file from ``(tick, message bytes)`` events (stable-sorted by tick).

    Header: ``MThd``, length 6, format 0, one track, 480 ticks per quarter; the track opens with a
    tempo meta event (480 000 us per quarter, so a tick is 1 ms) and closes with end-of-track.
    """
    events = sorted(events, key=lambda e: e[0])
    track = bytearray(b"\x00\xff\x51\x03" + TEMPO_US.to_bytes(3, "big"))
    now = 0
    for tick, msg in events:
        track += vlq(tick - now) + msg
        now = tick
    track += vlq(max(0, (end_tick if end_tick is not None else now) - now)) + b"\xff\x2f\x00"
    header = (
        b"MThd"
        + (6).to_bytes(4, "big")
        + bytes([0, 0, 0, 1])
        + TICKS_PER_QUARTER.to_bytes(2, "big")
    )
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def control(ch: int, cc: int, value: int) -> bytes:
    return bytes([0xB0 | ch, cc, value])


def program_change(ch: int, program: int) -> bytes:
    return bytes([0xC0 | ch, program])


def pitch_bend(ch: int, bend: int) -> bytes:
    """Pitch bend ``bend`` in [-8192, 8191] around the centre 8192 (14 bits, LSB first)."""
    v = bend + 8192
    if not 0 <= v < 1 << 14:
        raise ValueError(f"pitch bend {bend} out of range")
    return bytes([0xE0 | ch, v & 0x7F, v >> 7])


def note_on(ch: int, note: int, velocity: int) -> bytes:
    return bytes([0x90 | ch, note, velocity])


def note_off(ch: int, note: int) -> bytes:
    return bytes([0x80 | ch, note, 64])


def clip_midi(spec: RenderSpec) -> bytes:
    """MIDI events of one clip (see the module docstring); times in ms (= ticks)."""
    s, ch = spec.source, spec.source.channel
    ev: list[tuple[int, bytes]] = [(0, control(ch, 121, 0))]  # reset all controllers
    if not s.drum:  # drum kits: channel 10 is bank 128 already
        ev += [(0, control(ch, 0, s.bank)), (0, control(ch, 32, 0))]
    ev += [(0, program_change(ch, s.program)), (0, pitch_bend(ch, spec.bend))]
    end = int(SUSTAIN_END * spec.duration_ms)
    step = (end - LEAD_MS) / spec.hits
    for k in range(spec.hits):
        on = LEAD_MS + round(k * step)
        ev += [(on, note_on(ch, spec.note, spec.velocity))]
        ev += [(on + round(0.9 * step), note_off(ch, spec.note))]
    ev += [(spec.duration_ms, control(ch, 120, 0))]  # all sound off at the cut
    return midi_file(ev, end_tick=spec.duration_ms + 10)


# ---------------------------------------------------------------------------------------------
# Parameter grids of the two splits
# ---------------------------------------------------------------------------------------------


def bank_sources(bank: str | Bank, label: str) -> tuple[Source, ...]:
    """The sources of ``label`` a bank can play: its font roles, and of drum kits those it holds."""
    b = get_bank(bank)
    return tuple(
        s
        for s in SOURCES.get(label, ())
        if s.font in b.fonts and (not s.drum or s.program in b.kits)
    )


def bank_labels(bank: str | Bank) -> tuple[str, ...]:
    """The covered labels a bank renders (banks without GS effects lack the 4 GS-only labels)."""
    return tuple(lab for lab in COVERED_LABELS if bank_sources(bank, lab))


def grid(label: str, split: str, bank: str | Bank = DEFAULT_BANK) -> list[RenderSpec]:
    """Every clip ``split`` may render for ``label`` from ``bank``, in a fixed nested order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if label not in SOURCES:
        raise ValueError(f"label {label!r} is not covered by the soundfonts; see COVERED_LABELS")
    b = get_bank(bank)
    out = []
    for src in bank_sources(b, label):
        if src.drum:
            notes, bends = src.notes, DRUM_BENDS[split]
        else:
            notes = tuple(n for n in src.notes if eval_note(n) == (split == "eval"))
            bends = (0,)
        for note, vel, bend, hits, dur in itertools.product(
            notes, VELOCITIES[split], bends, src.hits, DURATIONS_MS[split]
        ):
            out.append(RenderSpec(split, label, src, note, vel, bend, hits, dur, b.name))
    return out


def _seed(split: str, label: str, bank: str) -> str:
    # the default bank keeps its original seeds, so its clips stay the committed ones
    return f"{split}:{label}" if bank == DEFAULT_BANK else f"{split}:{bank}:{label}"


def eval_candidates(
    label: str, n: int = EVAL_CANDIDATES, bank: str | Bank = DEFAULT_BANK
) -> list[RenderSpec]:
    """The eval clips of ``label`` in the order they are tried (the first 6 unless one is silent).

    A seeded shuffle of the eval grid, then a greedy pick: each next spec is the first one that
    brings the most field values (source, note, velocity, bend, hits, duration) not used yet.
    """
    pool = grid(label, "eval", bank)
    random.Random(_seed("eval", label, get_bank(bank).name)).shuffle(pool)
    fields = ("source", "note", "velocity", "bend", "hits", "duration_ms")
    used: dict[str, set] = {f: set() for f in fields}
    out: list[RenderSpec] = []
    for _ in range(min(n, len(pool))):
        best = max(
            range(len(pool)),
            key=lambda i: (sum(getattr(pool[i], f) not in used[f] for f in fields), -i),
        )
        spec = pool.pop(best)
        for f in fields:
            used[f].add(getattr(spec, f))
        out.append(spec)
    return out


def train_candidates(label: str, bank: str | Bank = DEFAULT_BANK) -> list[RenderSpec]:
    """The train grid of ``label`` in a seeded shuffled order (the first ``per_class`` are used)."""
    pool = grid(label, "train", bank)
    random.Random(_seed("train", label, get_bank(bank).name)).shuffle(pool)
    return pool


def candidates(label: str, split: str, bank: str | Bank = DEFAULT_BANK) -> list[RenderSpec]:
    if split == "eval":
        return eval_candidates(label, bank=bank)
    return train_candidates(label, bank)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


class RenderError(RuntimeError):
    """fluidsynth or a soundfont is missing, or a label ran out of usable renders."""


class SilentRender(RenderError):
    """A render was silent or almost empty (rejected; the next candidate is tried)."""


def find_font(
    font: str, fonts: dict[str, Path] | None = None, bank: str | Bank = DEFAULT_BANK
) -> Path:
    """The file of source role ``font`` in ``bank`` (``fonts`` overrides the bank's paths)."""
    b = get_bank(bank)
    path = Path({**b.fonts, **(fonts or {})}[font])
    if not path.is_file():
        hint = " or pass --gm-font/--gs-font" if b.name == DEFAULT_BANK else ""
        raise RenderError(
            f"soundfont '{path}' of bank {b.name} not found; install the Debian package "
            f"{b.packages[font]}{hint}"
        )
    return path


def font_presets(path: Path) -> set[tuple[int, int]]:
    """The ``(bank, program)`` presets of an SF2/SF3 soundfont, read from its ``pdta/phdr`` chunk
    (the RIFF chunks are walked by seeking, so the sample data is never read).

    fluidsynth falls back to another preset when a clip asks for a missing one (a bank without GS
    effects plays bank 0's program instead), so :func:`render_split` checks every source first.
    """
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"sfbk":
            raise RenderError(f"'{path}' is not an SF2/SF3 soundfont")
        while head := f.read(8):
            cid, size = struct.unpack("<4sI", head)
            if cid == b"LIST" and f.read(4) == b"pdta":
                end = f.tell() + size - 4
                while f.tell() < end:
                    sid, ssize = struct.unpack("<4sI", f.read(8))
                    if sid == b"phdr":
                        data = f.read(ssize)
                        recs = [data[i : i + 38] for i in range(0, ssize - 38, 38)]  # last: EOP
                        return {struct.unpack("<HH", r[20:24])[::-1] for r in recs}
                    f.seek(ssize, 1)
            else:  # no RIFF pad byte: MuseScore's SF3 files have odd-sized chunks without one
                f.seek(size - (4 if cid == b"LIST" else 0), 1)
    raise RenderError(f"'{path}' has no preset headers (pdta/phdr)")


def check_presets(bank: str | Bank, labels: Sequence[str], fonts: dict[str, Path] | None = None):
    """Raise :class:`RenderError` if a source of ``labels`` is not a preset of ``bank``'s font."""
    b = get_bank(bank)
    have: dict[str, set[tuple[int, int]]] = {}
    for lab in labels:
        for s in bank_sources(b, lab):
            if s.font not in have:
                have[s.font] = font_presets(find_font(s.font, fonts, b))
            if (s.bank, s.program) not in have[s.font]:
                raise RenderError(
                    f"bank {b.name}: {s.name} (bank {s.bank}, program {s.program}) of {lab} is "
                    f"not a preset of {find_font(s.font, fonts, b)}"
                )


def fluidsynth_command(
    font: Path, midi_path: Path, wav_path: Path, fluidsynth: str = "fluidsynth"
) -> list[str]:
    """The fluidsynth CLI call: no shell/MIDI in, quiet, reverb and chorus off, 32 kHz float WAV."""
    return [
        fluidsynth,
        "-ni",
        "-q",
        "-R",
        "0",
        "-C",
        "0",
        "-g",
        str(FLUIDSYNTH_GAIN),
        "-r",
        str(RENDER_RATE),
        "-O",
        "float",
        "-T",
        "wav",
        "-F",
        str(wav_path),
        "-o",
        "synth.cpu-cores=1",
        "-o",
        "synth.dynamic-sample-loading=1",
        str(font),
        str(midi_path),
    ]


def finish(raw: np.ndarray, n: int, *, where: str = "render") -> np.ndarray:
    """Raw fluidsynth output ``[frames, 2]`` → mono ``[n]`` float32, faded and peak-normalised.

    Raises :class:`SilentRender` when the raw peak is below ``SILENT_PEAK`` or the normalised RMS
    below ``MIN_RMS``.
    """
    x = raw.mean(axis=1) if raw.ndim == 2 else raw
    x = np.asarray(x[:n], dtype=np.float64)
    if x.shape[0] < n:
        x = np.pad(x, (0, n - x.shape[0]))
    peak = float(np.max(np.abs(x)))
    if peak < SILENT_PEAK:
        raise SilentRender(f"{where}: silent render (peak {peak:.2e})")
    fade = FADE_MS * RENDER_RATE // 1000
    x[-fade:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(fade) + 1) / fade)
    x *= PEAK_LEVEL / peak
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < MIN_RMS:
        raise SilentRender(f"{where}: almost empty render (RMS {20 * np.log10(rms):.1f} dBFS)")
    return x.astype(np.float32)


def render_clip(
    spec: RenderSpec,
    *,
    fonts: dict[str, Path] | None = None,
    fluidsynth: str = "fluidsynth",
    workdir: Path | None = None,
) -> np.ndarray:
    """Render one clip with fluidsynth: mono float32 ``[spec.n_samples]`` at 32 kHz, peak 0.5.

    ``fonts`` overrides the paths of the spec's bank (role -> file)."""
    font = find_font(spec.source.font, fonts, spec.bank)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        mid, wav = Path(tmp) / "clip.mid", Path(tmp) / "clip.wav"
        mid.write_bytes(spec.midi())
        cmd = fluidsynth_command(font, mid, wav, fluidsynth)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise RenderError(f"fluidsynth executable {fluidsynth!r} not found") from None
        if res.returncode != 0 or not wav.is_file():
            raise RenderError(f"fluidsynth failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        raw, sr = sf.read(str(wav), dtype="float64", always_2d=True)
    if sr != RENDER_RATE:
        raise RenderError(f"fluidsynth wrote {sr} Hz, expected {RENDER_RATE}")
    where = f"{spec.bank} {spec.label} {spec.source.name} note {spec.note}"
    return finish(raw, spec.n_samples, where=where)


def _try_render(spec: RenderSpec, opts: tuple) -> np.ndarray | SilentRender:
    try:
        return render_clip(spec, fonts=opts[0], fluidsynth=opts[1])
    except SilentRender as e:
        return e


def render_label(
    label: str,
    split: str,
    per_class: int,
    *,
    pool: ThreadPoolExecutor,
    fonts: dict[str, Path] | None = None,
    fluidsynth: str = "fluidsynth",
    bank: str | Bank = DEFAULT_BANK,
) -> list[tuple[RenderSpec, np.ndarray]]:
    """Render the first ``per_class`` usable candidates of ``label`` (silent ones are replaced)."""
    todo = iter(candidates(label, split, bank))
    done: list[tuple[RenderSpec, np.ndarray]] = []
    while len(done) < per_class:
        chunk = list(itertools.islice(todo, per_class - len(done)))
        if not chunk:
            raise RenderError(
                f"{label}: only {len(done)} usable {split} renders from bank "
                f"{get_bank(bank).name}, need {per_class}"
            )

        results = pool.map(_try_render, chunk, itertools.repeat((fonts, fluidsynth)))
        for spec, res in zip(chunk, results, strict=True):
            if isinstance(res, SilentRender):
                log.warning("rejected: %s", res)
            else:
                done.append((spec, res))
    return done


PARAM_COLUMNS = (
    "fname",
    "label",
    "sound_bank",
    "source",
    "font",
    "bank",
    "program",
    "stand_in",
    "note",
    "velocity",
    "bend",
    "hits",
    "duration_ms",
)


def param_row(spec: RenderSpec, fname: str) -> tuple:
    """One row of ``render_<split>.csv``, in ``PARAM_COLUMNS`` order."""
    s = spec.source
    return (fname, spec.label, spec.bank, s.name, s.font, s.bank, s.program, int(s.stand_in), spec.note,
            spec.velocity, spec.bend, spec.hits, spec.duration_ms)  # fmt: skip


def params_csv_name(split: str) -> str:
    return f"render_{split}.csv"


def render_split(
    split: str,
    out: Path,
    *,
    per_class: int | None = None,
    labels: Sequence[str] | None = None,
    ext: str | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    fonts: dict[str, Path] | None = None,
    fluidsynth: str = "fluidsynth",
    banks: Sequence[str | Bank] = (DEFAULT_BANK,),
) -> list[tuple[RenderSpec, str]]:
    """Render a split into an FSDKaggle2018-layout folder ``out``; returns ``(spec, fname)`` rows.

    ``eval`` writes ``test_post_competition_scoring_clips.csv`` and ``audio_test/`` (FLAC by
    default); ``train`` writes ``train.csv`` (all ``manually_verified=1``) and ``audio_train/``
    (WAV by default). Both write ``render_<split>.csv`` with every clip's parameters.

    ``banks``: the sound banks (:data:`BANKS`) to render from, ``per_class`` clips per label from
    each bank that covers the label (a label no bank covers is an error; without ``labels``, the
    labels some bank covers). ``fonts`` overrides the default bank's soundfont paths.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    bank_list = [get_bank(b) for b in banks]
    if not bank_list or len({b.name for b in bank_list}) != len(bank_list):
        raise ValueError(f"banks must be distinct and at least one, got {list(banks)}")
    per_class = per_class or (EVAL_PER_CLASS if split == "eval" else TRAIN_PER_CLASS)
    for lab in labels or ():
        if lab not in SOURCES:
            raise ValueError(f"label {lab!r} is not covered; choose from {COVERED_LABELS}")
        if not any(b.covers(lab) for b in bank_list):
            names = ", ".join(b.name for b in bank_list)
            raise ValueError(f"label {lab!r} is not covered by the banks {names}")
    labels = list(
        labels or [lab for lab in COVERED_LABELS if any(b.covers(lab) for b in bank_list)]
    )
    ext = ext or (".flac" if split == "eval" else ".wav")
    if ext not in (".wav", ".flac"):
        raise ValueError(f"audio extension must be .wav or .flac, got {ext!r}")
    bank_fonts = {b.name: fonts if b.name == DEFAULT_BANK else None for b in bank_list}
    for b in bank_list:
        for font in {s.font for lab in labels for s in bank_sources(b, lab)}:
            find_font(font, bank_fonts[b.name], b)
    if shutil.which(fluidsynth) is None:
        raise RenderError(
            f"fluidsynth executable {fluidsynth!r} not found (apt-get install fluidsynth)"
        )
    for b in bank_list:
        check_presets(b, labels, bank_fonts[b.name])
    audio_dir = out / (C.TEST_AUDIO_DIR if split == "eval" else C.TRAIN_AUDIO_DIR)
    csv_path = out / (C.TEST_CSV if split == "eval" else C.TRAIN_CSV)
    if not overwrite and (csv_path.exists() or (audio_dir.is_dir() and any(audio_dir.iterdir()))):
        raise RenderError(f"'{out}' already holds a {split} split; pass --overwrite to replace it")
    audio_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # drop the old split's clips so that no stale file outlives its CSV row
        for old in [*audio_dir.glob("*.wav"), *audio_dir.glob("*.flac")]:
            old.unlink()

    rows: list[tuple[RenderSpec, str]] = []
    clips: list[datasets.Clip] = []
    names: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for lab in labels:
            for b in (b for b in bank_list if b.covers(lab)):
                rendered = render_label(
                    lab, split, per_class, pool=pool, fonts=bank_fonts[b.name],
                    fluidsynth=fluidsynth, bank=b,
                )  # fmt: skip
                for spec, x in rendered:
                    fname = spec.fname(ext)
                    if fname in names:
                        raise RenderError(f"file name collision: {fname}")
                    names.add(fname)
                    audio.write_audio(audio_dir / fname, x, RENDER_RATE)
                    rows.append((spec, fname))
                    clips.append(
                        datasets.Clip(
                            fname,
                            lab,
                            C.LABEL_INDEX[lab],
                            audio_dir / fname,
                            "test" if split == "eval" else "train",
                            manually_verified=None if split == "eval" else True,
                            usage=USAGE if split == "eval" else None,
                            freesound_id=FREESOUND_ID if split == "eval" else None,
                            license=b.licence if split == "eval" else None,
                        )
                    )
                log.info("%s: %d %s clips from %s", lab, per_class, split, b.name)
    if split == "eval":
        datasets.write_test_csv(csv_path, clips)
    else:
        datasets.write_train_csv(csv_path, clips)
    with open(out / params_csv_name(split), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PARAM_COLUMNS)
        w.writerows(param_row(spec, fname) for spec, fname in rows)
    return rows


def read_params(path: Path) -> list[dict[str, str]]:
    """Rows of a ``render_<split>.csv`` written by :func:`render_split`."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jaxadv.demo.render",
        description="Render demo clips of the 26 FSDKaggle2018 labels the soundfonts cover (the "
        "MIT FluidR3 fonts by default, other sound banks with --banks), into an "
        "FSDKaggle2018-layout folder (mono 16-bit, 32 kHz).",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        required=True,
        help="eval: 6 clips/label, test CSV + audio_test/ (FLAC); "
        "train: --per-class clips/label, train.csv + audio_train/ (WAV)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--per-class",
        type=int,
        default=None,
        help=f"clips per label (default {EVAL_PER_CLASS} eval, {TRAIN_PER_CLASS} train)",
    )
    p.add_argument("--labels", default=None, help="comma-separated subset of the covered labels")
    p.add_argument("--format", choices=("wav", "flac"), default=None, help="audio file format")
    p.add_argument("--jobs", type=int, default=1, help="parallel fluidsynth processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing split in --out")
    p.add_argument("--gm-font", type=Path, default=FONT_PATHS["GM"], help="FluidR3_GM.sf2")
    p.add_argument("--gs-font", type=Path, default=FONT_PATHS["GS"], help="FluidR3_GS.sf2")
    p.add_argument(
        "--banks",
        default=DEFAULT_BANK,
        help="comma-separated sound banks to render from, --per-class clips per label from each: "
        + "; ".join(f"{b.name}: {b.licence}" for b in BANKS.values())
        + f" (the demo models train on {','.join(TRAIN_BANKS)})",
    )
    p.add_argument("--fluidsynth", default="fluidsynth", help="fluidsynth executable")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    labels = args.labels.split(",") if args.labels else None
    try:
        rows = render_split(
            args.split,
            args.out,
            per_class=args.per_class,
            labels=labels,
            ext=f".{args.format}" if args.format else None,
            jobs=args.jobs,
            overwrite=args.overwrite,
            fonts={"GM": args.gm_font, "GS": args.gs_font},
            fluidsynth=args.fluidsynth,
            banks=[b for b in args.banks.split(",") if b],
        )
    except (RenderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    adir = args.out / (C.TEST_AUDIO_DIR if args.split == "eval" else C.TRAIN_AUDIO_DIR)
    size = sum(os.path.getsize(adir / f) for _, f in rows)
    print(f"wrote {len(rows)} {args.split} clips to {args.out} ({size / 1e6:.2f} MB of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
