"""vatlib: semi-supervised MNIST with 100 labels and Virtual Adversarial Training."""

from ._version import __version__
from .augment import random_affine, random_stroke, random_translate
from .checkpoint import (CheckpointError, SaveError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint,
                         write_json)
from .config import PRESETS, TrainConfig, draw_config, parse_draws, preset_config
from .data import DATASETS, DataError, ImageData, Split, load_dataset, sample_labelled, split_train, to_float
from .inference import evaluate, predict, resolve_device
from .model import MLP, MODELS, ConvNet, build_model
from .run import Run
from .runs import RunExistsError, TrainingInterrupted, TrainResult, train
from .terms import LOSS_TERMS, register_term
from .tune import tune, tune_table
from .vat import DEFAULT_XI, EntropyLoss, VATLoss, balance_loss, entropy_loss, l2_normalize, vat_loss, vat_perturbation

__all__ = [
    "CheckpointError", "ConvNet", "MLP", "DATASETS", "DEFAULT_XI", "DataError", "EntropyLoss", "ImageData", "LOSS_TERMS",
    "MODELS", "PRESETS", "Run", "RunExistsError", "SaveError", "Split", "TrainConfig", "TrainingInterrupted",
    "TrainResult", "VATLoss", "__version__", "balance_loss", "build_model", "draw_config", "entropy_loss", "evaluate",
    "l2_normalize", "load_checkpoint", "load_dataset", "load_model", "model_from_checkpoint", "parse_draws", "predict",
    "preset_config", "random_affine", "random_stroke", "random_translate", "register_term", "resolve_device",
    "sample_labelled", "save_checkpoint", "split_train", "to_float", "train", "tune", "tune_table", "vat_loss",
    "vat_perturbation", "write_json",
]
