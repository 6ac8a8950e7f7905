"""detkit.engine: a config made into a ready run (``prepare``), and what the commands do with it:
training, evaluation of a checkpoint, prediction on images, the quickstart.

    from detkit.config import load_config
    from detkit.engine import evaluate_checkpoint, predict_checkpoint, prepare, train
    config = load_config("configs/quickstart.yaml")
    result = train(config)                                                # detkit train
    evaluation = evaluate_checkpoint(config, result.last)                 # detkit eval
    predict_checkpoint(config, ["images/"], result.last, "predictions/")  # detkit predict
"""

from detkit.engine.evaluate import evaluate_checkpoint, evaluate_model, predict
from detkit.engine.inference import Predictions, predict_checkpoint, predict_images
from detkit.engine.quickstart import Quickstart, quickstart
from detkit.engine.run import Prepared, load_model, pick_device, prepare
from detkit.engine.stopping import Interrupted
from detkit.engine.trainer import NonFiniteLoss, RunResult, train

__all__ = ["Interrupted", "NonFiniteLoss", "Predictions", "Prepared", "Quickstart", "RunResult", "evaluate_checkpoint",
           "evaluate_model", "load_model", "pick_device", "predict", "predict_checkpoint", "predict_images", "prepare",
           "quickstart", "train"]
