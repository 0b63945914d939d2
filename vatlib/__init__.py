"""vatlib: semi-supervised image classification from few labels with Virtual Adversarial Training."""

from ._version import __version__
from .augment import random_affine, random_stroke, random_translate
from .checkpoint import (CheckpointError, SaveError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint,
                         write_json)
from .config import PRESETS, TrainConfig, draw_config, parse_draws, preset_config, recipe, same_recipe
from .data import DATASETS, DataError, ImageData, Split, load_dataset, sample_labelled, split_train, to_float
from .inference import evaluate, predict, resolve_device
from .model import MLP, MODELS, ConvNet, build_model, register_model
from .run import Run
from .schedules import SCHEDULES, register_schedule
from .runs import RunExistsError, RunLockedError, TrainingInterrupted, TrainResult, train
from .terms import LOSS_TERMS, TermContext, pseudo_label_loss, register_term
from .tune import tune, tune_table
from .vat import DEFAULT_XI, EntropyLoss, VATLoss, balance_loss, entropy_loss, l2_normalize, vat_loss, vat_perturbation

__all__ = [
    "balance_loss", "build_model", "CheckpointError", "ConvNet", "DataError", "DATASETS", "DEFAULT_XI", "draw_config",
    "entropy_loss", "EntropyLoss", "evaluate", "ImageData", "l2_normalize", "load_checkpoint", "load_dataset",
    "load_model", "LOSS_TERMS", "MLP", "model_from_checkpoint", "MODELS", "parse_draws", "predict", "preset_config",
    "PRESETS", "pseudo_label_loss", "random_affine", "random_stroke", "random_translate", "recipe", "register_model",
    "register_schedule", "register_term", "resolve_device", "Run", "RunExistsError", "RunLockedError", "same_recipe",
    "sample_labelled", "save_checkpoint", "SaveError", "SCHEDULES", "Split", "split_train", "TermContext", "to_float",
    "train", "TrainConfig", "TrainingInterrupted", "TrainResult", "tune", "tune_table", "vat_loss", "vat_perturbation",
    "VATLoss", "__version__", "write_json",
]
