"""Registers ``tvface evaluate`` (see :mod:`tvface.evaluation.run`)."""
from tvface.evaluation.run import add_evaluate_parser

__all__ = ["add_evaluate_parser"]
