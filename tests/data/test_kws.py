import shutil

import numpy as np
import pytest

import secateurs as sc
from secateurs.data import kws

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is installed by .ci/run"
)


def test_mfcc_of_one_second_is_49_by_10_and_sees_the_pitch():
    t = np.arange(kws.RATE) / kws.RATE
    low, high = (np.sin(2 * np.pi * f * t) for f in (300.0, 2000.0))
    a, b = kws.mfcc(low), kws.mfcc(high)
    assert a.shape == (49, 10) and a.dtype == np.float32
    assert np.allclose(a[10], a[30], atol=1e-3)  # a steady tone: the same in every frame
    assert np.abs(a - b).mean() > 1.0  # different pitches, different cepstra
    assert np.array_equal(kws.mfcc(low[:8000]), kws.mfcc(np.r_[low[:8000], np.zeros(8000)]))


def test_noise_has_unit_rms_and_is_seeded():
    a = kws.noise(np.random.default_rng(3))
    b = kws.noise(np.random.default_rng(3))
    assert np.array_equal(a, b) and np.sqrt(np.mean(a**2)) == pytest.approx(1.0, rel=1e-3)


def test_missing_espeak_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    monkeypatch.setattr(kws.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        sc.data.load("kws", per_class=2)
    assert not list(tmp_path.iterdir())


@needs_espeak
def test_speech_is_synthesized_at_16khz(tmp_path):
    audio = kws.speak("yes", "en-us+f2", 150, 50)
    assert 0.1 * kws.RATE < len(audio) < kws.RATE and np.abs(audio).max() > 0.05


@needs_espeak
def test_small_kws_is_balanced_cached_and_split_by_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CACHE", str(tmp_path))
    task = sc.data.load("kws", per_class=10)
    assert task.input_shape == (1, 49, 10) and task.num_classes == 12
    ys = np.concatenate([s.tensors[1].numpy() for s in (task.train, task.val, task.test)])
    assert np.bincount(ys).tolist() == [10] * 12
    cached = list(tmp_path.glob("kws-v*-10.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(kws, "generate", lambda *a: pytest.fail("regenerated"))
    again = sc.data.load("kws", per_class=10)
    assert np.array_equal(again.test.tensors[0].numpy(), task.test.tensors[0].numpy())
    other = sc.data.load("kws", seed=1, per_class=10)
    assert not np.array_equal(other.test.tensors[1].numpy(), task.test.tensors[1].numpy())


@needs_espeak
@pytest.mark.slow
def test_ds_cnn_learns_keyword_spotting():
    task = sc.data.load("kws")  # 300 per class, generated once into the user cache
    model = sc.models.create("ds_cnn", task, seed=0)
    sc.fit(model, task, epochs=15, lr=3e-3, seed=0, progress=False)
    assert sc.evaluate(model, task) > 0.93  # 97.0% at seed 0 (docs/models.md)
