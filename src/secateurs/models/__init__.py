"""The model zoo: small builders registered by name, each for 1-D signals and 2-D images.

model = sc.models.create("mobilenet_v2", task, width=0.5)
model = sc.models.from_import("my_pkg.models:build", hidden=64)   # a user's own builder
"""

from __future__ import annotations

from . import (  # noqa: F401  (each module registers its builders)
    ds_cnn,
    efficientnet,
    elm,
    ghostnet,
    lenet,
    masr,
    mlp,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3,
    resnet8,
    shufflenet,
    xception,
)
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .elm import ExtremeLearningMachine
from .layers import ChannelShuffle, FeatureMap, make_divisible
from .random import random_input_shape, random_net
from .registry import (
    MODELS,
    check_model_fits,
    create,
    from_import,
    import_object,
    list_models,
    register_model,
)

__all__ = [
    "MODELS",
    "ChannelShuffle",
    "ExtremeLearningMachine",
    "FeatureMap",
    "check_model_fits",
    "create",
    "from_import",
    "import_object",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "make_divisible",
    "random_input_shape",
    "random_net",
    "register_model",
    "save_checkpoint",
]
