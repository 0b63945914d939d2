"""vatlib: semi-supervised MNIST with 100 labels and Virtual Adversarial Training."""

from ._version import __version__
from .checkpoint import (CheckpointError, SaveError, load_checkpoint, load_model, model_from_checkpoint, save_checkpoint,
                         write_json)
from .data import DATASETS, DataError, ImageData, Split, load_dataset, random_affine, random_translate, sample_labelled, split_train, to_float
from .model import MODELS, ConvNet, Ensemble, build_model
from .train import (LOSS_TERMS, PRESETS, Run, RunExistsError, TrainConfig, TrainingInterrupted, TrainResult, evaluate,
                    predict, preset_config, resolve_device, train)
from .tune import tune, tune_table
from .vat import DEFAULT_XI, EntropyLoss, balance_loss, VATLoss, entropy_loss, l2_normalize, vat_loss, vat_perturbation

__all__ = [
    "CheckpointError", "ConvNet", "DATASETS", "DEFAULT_XI", "DataError", "Ensemble", "EntropyLoss", "ImageData", "LOSS_TERMS", "MODELS",
    "PRESETS", "Run", "RunExistsError", "SaveError", "Split", "TrainConfig", "TrainingInterrupted", "TrainResult", "VATLoss",
    "__version__", "balance_loss", "build_model", "entropy_loss", "evaluate", "l2_normalize", "load_checkpoint",
    "load_dataset", "load_model", "model_from_checkpoint", "predict", "preset_config", "random_affine", "random_translate",
    "resolve_device", "sample_labelled", "save_checkpoint", "split_train", "to_float", "train", "tune", "tune_table", "vat_loss",
    "vat_perturbation", "write_json",
]
