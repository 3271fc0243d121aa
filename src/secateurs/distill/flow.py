"""``distill``: fine-tune a student against a teacher with one named method.

The methods are small functions from the registry ``METHODS`` returning
``(teacher to use, loss terms)``, so ``sc.distill.distill(student, teacher, task,
method="kd")`` and a recipe's distill stage are the same call, and a user adds a method
with ``@METHODS.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .._checks import in_place
from .._registry import Registry
from ..data.task import Task
from ..train import History, fit
from .attention import enhance_teacher
from .features import AttentionKD, FeatureKD
from .kd import KD
from .relational import RKD
from .taps import block_outputs


@dataclass(frozen=True)
class Options:
    """Knobs the methods share; each method reads the ones it needs."""

    alpha: float = 0.5
    temperature: float = 4.0
    layers: object = None  # module paths or {student path: teacher path}; None: defaults
    feature_weight: float = 1.0
    attention_weight: float = 1.0
    seed: int = 0
    enhance_epochs: int = 3


METHODS: Registry = Registry("distillation method")


@METHODS.register("finetune")
def _finetune(teacher, task, o: Options):
    """Plain fine-tuning with cross-entropy, the control every method is compared with."""
    return None, []


@METHODS.register("kd")
def _kd(teacher, task, o: Options):
    return teacher, [KD(o.alpha, o.temperature)]


@METHODS.register("rkd")
def _rkd(teacher, task, o: Options):
    return teacher, [RKD()]


@METHODS.register("feature")
def _feature(teacher, task, o: Options):
    return teacher, [FeatureKD(o.layers, o.feature_weight)]


@METHODS.register("layerwise")
def _layerwise(teacher, task, o: Options):
    """FitNets hints (Romero et al. 2015, arXiv 1412.6550) at every block's output, not only
    the last stage's: layer-wise distillation, as used to recover pruned models (Sun et al.
    2019, patient KD, arXiv 1908.09355; Xia, Zhong & Chen 2022, CoFi, arXiv 2204.00408).
    A student pruned from its teacher has every block under the same path."""
    layers = block_outputs(teacher, task) if o.layers is None else o.layers
    return teacher, [FeatureKD(layers, o.feature_weight)]


@METHODS.register("attention")
def _attention(teacher, task, o: Options):
    return teacher, [AttentionKD(o.layers, o.attention_weight)]


@METHODS.register("ca_kd")
def _ca_kd(teacher, task, o: Options):
    """KD on the logits plus feature KD on the attended maps of a coordinate-attention
    teacher (:func:`enhance_teacher`)."""
    layers = (
        o.layers
        if o.layers is None or isinstance(o.layers, (list, tuple, str))
        else list(o.layers.values())
    )
    enhanced = enhance_teacher(teacher, task, layers=layers, epochs=o.enhance_epochs, seed=o.seed)
    return enhanced, [KD(o.alpha, o.temperature), FeatureKD(o.layers, o.feature_weight)]


@in_place
def distill(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    *,
    method: str = "kd",
    epochs: int = 5,
    lr: float = 1e-3,
    alpha: float = 0.5,
    temperature: float = 4.0,
    layers=None,
    feature_weight: float = 1.0,
    attention_weight: float = 1.0,
    seed: int = 0,
    **fit_kwargs,
) -> History:
    """Train ``student`` in place for ``epochs`` with the distillation ``method`` (one of
    ``METHODS``: finetune, kd, rkd, feature, layerwise, attention, ca_kd) and return its History.

    ``fit_kwargs`` go to :func:`sc.fit` (optimizer, batch_size, callbacks, progress...);
    the ``teacher`` is never changed. ``task`` gives the data, ``lr`` the learning rate,
    ``seed`` the batch order. KD mixes the cross-entropy and the teacher's softened logits
    by ``alpha`` at ``temperature`` (Hinton et al. 2015, arXiv 1503.02531); the feature and
    attention methods match the ``layers`` they name (default: chosen per model), weighted
    by ``feature_weight`` and ``attention_weight``.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    make = METHODS.get(method)
    options = Options(alpha, temperature, layers, feature_weight, attention_weight, seed)
    use_teacher, terms = make(teacher, task, options)
    losses = [*terms, *fit_kwargs.pop("losses", ())]
    return fit(
        student,
        task,
        epochs=epochs,
        lr=lr,
        losses=losses,
        teacher=use_teacher,
        seed=seed,
        **fit_kwargs,
    )
