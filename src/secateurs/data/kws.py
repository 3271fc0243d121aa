"""Keyword spotting, synthesized offline: espeak-ng speech, background noise, MFCCs.

Ten keywords of the Speech Commands set (Warden 2018, arXiv 1804.03209) plus "unknown"
(ten other words) and "silence" (noise alone). Each utterance is spoken by espeak-ng with
a random voice, variant, speed and pitch; resampled to 16 kHz; placed at a random
offset in one second; and mixed with synthesized background noise (white, pink, brown,
mains hum) at a random SNR of 0 to 20 dB. Features are 49 x 10 MFCCs: 40 ms frames with
a 20 ms hop, 40 mel bands, 10 cepstral coefficients, as in Zhang et al. 2017 "Hello
Edge" (arXiv 1711.07128). Everything is computed here with numpy and scipy.

Generated once per size into the user's cache directory (``$SECATEURS_CACHE``, else
``$XDG_CACHE_HOME/secateurs``, else ``~/.cache/secateurs``), written atomically.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
from scipy.fft import dct, rfft
from scipy.signal import resample_poly

from .._io import write_atomic
from .._progress import Steps
from .registry import register_task
from .task import Task, stratified_split, tensor_dataset

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = ("bed", "bird", "cat", "dog", "house", "tree", "happy", "wow", "marvin", "sheila")
CLASSES = (*KEYWORDS, "unknown", "silence")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
RATE = 16_000
FRAME, HOP, BANDS, COEFFS, NFFT = 640, 320, 40, 10, 1024
VERSION = 1


def cache_dir() -> Path:
    if os.environ.get("SECATEURS_CACHE"):
        return Path(os.environ["SECATEURS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "secateurs"


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "the kws task synthesizes its speech with espeak-ng, which is not installed; "
            "install it (Debian or Ubuntu: apt-get install espeak-ng; macOS: brew install "
            "espeak-ng) and load the task again"
        )
    return exe


def speak(word: str, voice: str, speed: int, pitch: int, exe: str | None = None) -> np.ndarray:
    """espeak-ng's rendering of ``word`` as float samples at 16 kHz."""
    out = subprocess.run(
        [exe or _espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        capture_output=True,
        check=True,
        timeout=60,
    )
    wav = out.stdout
    start = wav.find(b"data") + 8  # streamed WAV: the header's sizes are placeholders
    rate = int.from_bytes(wav[24:28], "little")
    samples = np.frombuffer(wav[start : len(wav) - (len(wav) - start) % 2], dtype="<i2")
    audio = samples.astype(np.float32) / 32768.0
    return resample_poly(audio, RATE // 100, rate // 100).astype(np.float32)


def noise(rng: np.random.Generator, n: int = RATE) -> np.ndarray:
    """One second of background: white, pink, brown noise or mains hum, unit RMS."""
    kind = rng.integers(4)
    if kind == 0:
        x = rng.standard_normal(n)
    elif kind == 1:  # pink: 1/f power
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        x = np.fft.irfft(spectrum, n)
    elif kind == 2:  # brown: integrated white noise, without its drift
        x = np.cumsum(rng.standard_normal(n))
        x -= np.linspace(x[0], x[-1], n)
    else:
        t = np.arange(n) / RATE
        f0 = rng.choice([50.0, 60.0])
        x = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6)
        ) + 0.1 * rng.standard_normal(n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _mel_filters() -> np.ndarray:
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(mel(20), mel(4000), BANDS + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(NFFT, 1 / RATE)
    filters = np.zeros((BANDS, len(bins)))
    for i in range(BANDS):
        lo, mid, hi = edges[i : i + 3]
        rising, falling = (bins - lo) / (mid - lo), (hi - bins) / (hi - mid)
        filters[i] = np.clip(np.minimum(rising, falling), 0, None)
    return filters


MEL = _mel_filters()


def mfcc(audio: np.ndarray) -> np.ndarray:
    """49 x 10 MFCCs of one second of 16 kHz audio."""
    audio = np.asarray(audio, dtype=np.float64)[:RATE]
    audio = np.pad(audio, (0, RATE - len(audio)))
    count = 1 + (RATE - FRAME) // HOP
    frames = np.stack([audio[i * HOP : i * HOP + FRAME] for i in range(count)])
    power = np.abs(rfft(frames * np.hanning(FRAME), n=NFFT)) ** 2
    energies = np.log(power @ MEL.T + 1e-10)
    return dct(energies, type=2, norm="ortho", axis=1)[:, :COEFFS].astype(np.float32)


def utterance(label: int, rng: np.random.Generator, exe: str) -> np.ndarray:
    """One second of audio for class ``label``."""
    clip = np.zeros(RATE, dtype=np.float32)
    if CLASSES[label] != "silence":
        word = CLASSES[label] if label < len(KEYWORDS) else rng.choice(UNKNOWN)
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        speech = speak(
            str(word), voice, int(rng.integers(110, 230)), int(rng.integers(15, 85)), exe
        )[:RATE]
        speech /= np.abs(speech).max() + 1e-6
        offset = int(rng.integers(0, RATE - len(speech) + 1))
        clip[offset : offset + len(speech)] = speech * rng.uniform(0.3, 1.0)
        rms = np.sqrt(np.mean(speech**2)) * len(speech) / RATE
        snr_db = rng.uniform(0, 20)
        return clip + noise(rng) * rms * 10 ** (-snr_db / 20)
    return noise(rng) * rng.uniform(0.001, 0.3)


def generate(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` examples of each class: MFCCs (N, 1, 49, 10) and labels."""
    exe = _espeak()
    rng = np.random.default_rng(seed)

    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    features = []
    with Steps("kws: synthesizing speech (espeak-ng, once, then cached)", len(labels)) as bar:
        for y in labels:
            features.append(mfcc(utterance(int(y), rng, exe)))
            bar.advance()
    return np.stack(features)[:, None], labels.astype(np.int64)


def load_arrays(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The cached dataset of this size, generated on first use."""
    path = cache_dir() / f"kws-v{VERSION}-{per_class}.npz"
    if not path.is_file():
        x, y = generate(per_class)

        def save(f):
            np.savez_compressed(f, x=x, y=y)

        write_atomic(path, save)
    with np.load(path, allow_pickle=False) as archive:
        return archive["x"], archive["y"]


@register_task("kws")
def kws(seed: int = 0, per_class: int = 300) -> Task:
    """Keyword spotting: 10 keywords, unknown and silence, synthesized with espeak-ng;
    49 x 10 MFCC inputs (1, 49, 10); stratified split 70/15/15 by ``seed``. Features are
    standardized with the training split's mean and deviation per coefficient."""
    x, y = load_arrays(int(per_class))
    x_train, x_rest, y_train, y_rest = stratified_split(x, y, 0.30, seed)
    x_val, x_test, y_val, y_test = stratified_split(x_rest, y_rest, 0.50, seed)
    mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
    std = x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    norm = [((a - mean) / std).astype(np.float32) for a in (x_train, x_val, x_test)]
    return Task(
        name="kws",
        modality="audio",
        train=tensor_dataset(norm[0], y_train),
        val=tensor_dataset(norm[1], y_val),
        test=tensor_dataset(norm[2], y_test),
        input_shape=(1, 49, 10),
        num_classes=len(CLASSES),
    )


__all__ = ["CLASSES", "KEYWORDS", "generate", "kws", "mfcc", "noise", "speak"]
