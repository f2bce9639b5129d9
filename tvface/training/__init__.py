"""Staged training of the reconstructor (pretrain -> coarse -> detail) with exact resume."""
from tvface.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tvface.training.objective import STAGES, Batch, Objective
from tvface.training.precision import Precision, cpu_name, resolve_precision
from tvface.training.trainer import TrainData, Trainer, TrainingError, train

__all__ = ["STAGES", "Batch", "CheckpointError", "Objective", "Precision", "TrainData", "Trainer", "TrainingError",
           "cpu_name", "load_checkpoint", "resolve_precision", "save_checkpoint", "train"]
