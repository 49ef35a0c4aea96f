"""The one place for every constant of the project.

Everything that the original systems fix (sample rate, FFT sizes, the FSDKaggle2018 label list, the
authors' file-padding block, ...) is defined here once and imported everywhere else. Sources are in
``../shared/design/ORIGINALS.md`` (section numbers in the comments).
"""

from __future__ import annotations

# --- audio ------------------------------------------------------------------------------------
SAMPLE_RATE: int = 32_000  # Hz; every model of the paper runs at 32 kHz (ORIGINALS §2)
AUTHORS_LOAD_RATE: int = (
    22_050  # librosa.load default the paper's attack code used before resampling (§2.3)
)
BOX_MIN: float = -1.0  # waveform box of every attack (§5.1)
BOX_MAX: float = 1.0

# --- Iqbal et al. front-end (tqbl/dcase2018_task2, §2.1) -----------------------------------------
IQBAL_N_FFT: int = 1024
IQBAL_HOP: int = 512
N_MELS: int = 64
IQBAL_AMIN: float = 1e-10  # librosa.power_to_db amin
CHUNK_FRAMES: int = 128  # frames per model input chunk (§2.2)
R_THRESHOLD: int = 32  # Iqbal's rule for the remainder chunk at inference (§2.2)
STANDARDISE_EPS: float = 1e-6  # keras-preprocessing ImageDataGenerator: (x - mean) / (std + 1e-6)
GMEAN_EPS: float = 1e-8  # Iqbal's merge: scipy.stats.gmean(p + 1e-8)

# --- the paper authors' attack front-end (VinodS7/audio-adversaries, §2.3) ------------------------
AUTHORS_BLOCK: int = CHUNK_FRAMES * IQBAL_HOP  # 65536 samples: clips are zero-padded to a multiple
AUTHORS_LOG_OFFSET: float = 1e-6  # 10*log10((M + 1e-6) / (max M + 1e-6))

# --- Cochlear.ai / kapre 0.1.3.1 front-end (§2.4) -------------------------------------------------
KAPRE_N_FFT: int = 1024
KAPRE_HOP: int = 128  # n_fft / 8
KAPRE_AMIN: float = 1e-10
KAPRE_DYNAMIC_RANGE: float = 80.0  # dB floor below the maximum

# --- Keras defaults the ported models depend on (§1.1) --------------------------------------------
KERAS_BN_EPSILON: float = 1e-3
KERAS_BN_MOMENTUM: float = 0.99

# --- length bucketing ----------------------------------------------------------------------------
# Clips are padded up to a small ladder of lengths so that a sweep over thousands of clips compiles a
# handful of programs. The base is the authors' 65536-sample block, so every bucket is also valid for
# the ``iqbal_attack`` front-end; the ladder grows by at most 1.5x per rung.
BUCKET_BASE: int = AUTHORS_BLOCK
BUCKET_FACTORS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# --- FSDKaggle2018 (DCASE 2018 Task 2) ----------------------------------------------------------
# The 41 labels in the official alphabetical order; a label's index here is the class index of every
# model, checkpoint and table in the project.
LABELS: tuple[str, ...] = (
    "Acoustic_guitar",
    "Applause",
    "Bark",
    "Bass_drum",
    "Burping_or_eructation",
    "Bus",
    "Cello",
    "Chime",
    "Clarinet",
    "Computer_keyboard",
    "Cough",
    "Cowbell",
    "Double_bass",
    "Drawer_open_or_close",
    "Electric_piano",
    "Fart",
    "Finger_snapping",
    "Fireworks",
    "Flute",
    "Glockenspiel",
    "Gong",
    "Gunshot_or_gunfire",
    "Harmonica",
    "Hi-hat",
    "Keys_jangling",
    "Knock",
    "Laughter",
    "Meow",
    "Microwave_oven",
    "Oboe",
    "Saxophone",
    "Scissors",
    "Shatter",
    "Snare_drum",
    "Squeak",
    "Tambourine",
    "Tearing",
    "Telephone",
    "Trumpet",
    "Violin_or_fiddle",
    "Writing",
)
NUM_CLASSES: int = len(LABELS)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

# The six music classes of the targeted experiment (paper §3.2, ORIGINALS §5.7), in the authors' order.
MUSIC_CLASSES: tuple[str, ...] = (
    "Bass_drum",
    "Cello",
    "Clarinet",
    "Oboe",
    "Snare_drum",
    "Violin_or_fiddle",
)

# File-list facts (ORIGINALS §5.9).
ATTACK_LIST_PER_CLASS: int = 10  # first 10 manually verified training clips per class
UNTARGETED_PER_CLASS: int = 6  # 6 clips per class -> 246 files in the paper

TRAIN_CSV: str = "train.csv"
TEST_CSV: str = "test_post_competition_scoring_clips.csv"
TRAIN_AUDIO_DIR: str = "audio_train"
TEST_AUDIO_DIR: str = "audio_test"

# Authors' attack thresholds on the clip probability (§5.5).
AUTHORS_UNTARGETED_THRESHOLD: float = 0.0244  # ~1/41
AUTHORS_TARGETED_THRESHOLD: float = 0.975

assert NUM_CLASSES == 41, NUM_CLASSES
assert tuple(sorted(LABELS)) == LABELS
