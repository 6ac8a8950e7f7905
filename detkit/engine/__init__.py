"""detkit.engine: training runs, evaluation of a model on a dataset, prediction, torchrun."""

from detkit.engine.evaluate import evaluate_model, predict
from detkit.engine.inference import load_model
from detkit.engine.stopping import Interrupted
from detkit.engine.trainer import NonFiniteLoss, RunResult, train

__all__ = ["Interrupted", "NonFiniteLoss", "RunResult", "evaluate_model", "load_model", "predict", "train"]
