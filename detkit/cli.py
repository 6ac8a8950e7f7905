"""The ``detkit`` command line (click). Heavy imports happen inside the commands, so
``detkit --help`` answers at once."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from detkit import __version__


def user_errors(command):
    """A ValueError (a user's mistake, with a message saying what and where) becomes a
    one-line error and exit status 2, not a traceback; so does a file that cannot be written
    or read (OSError: a full disk, no permission), naming the file."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        except OSError as error:
            if error.filename is None:
                raise
            raise click.ClickException(f"{error.filename}: {error.strerror or error}") from None

    return run


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` created if missing and checked writable now, before any work: ``--out`` under a
    file, a read-only folder or an impossible path is an error naming the option, not a
    traceback at the end of a long run."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise click.UsageError(f"{option} {path}: cannot write there ({error.strerror or error})") from None
    return path


def output_file(path: str | Path, option: str) -> Path:
    """A file to be written: its folder created and checked writable now (see ``output_folder``)."""
    path = Path(path)
    if path.is_dir():
        raise click.UsageError(f"{option} {path}: is a folder; give a file name")
    output_folder(path.parent if str(path.parent) else ".", option)
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="detkit")
def main() -> None:
    """detkit: train, evaluate and compare object detectors.

    detkit builds detectors (Faster R-CNN, RetinaNet, SSD, YOLO, EfficientDet) from YAML
    configs, with swappable backbones, necks and post-processing (NMS, Soft-NMS,
    Adaptive-NMS, DIoU-NMS), and evaluates them with COCO mAP identical to pycocotools.

    Datasets can be COCO json, YOLO txt or Pascal VOC xml; `detkit data` converts between
    them, shows them and makes a synthetic one.

    Run `detkit COMMAND --help` for the options of a command.
    """


# ------------------------------------------------------------------------------ data

DATASET_HELP = (
    "DATASET is a COCO json (or a folder with annotations.json), a YOLO data YAML (or an "
    "images/<split> folder), or a VOC folder; the format is told from the path."
)


def _open(dataset: str, split: str | None, names: str | None):
    from detkit.data import open_dataset, read_names

    return open_dataset(dataset, split=split, names=read_names(names))


_split = click.option("--split", help="The split to read (YOLO YAML key, VOC ImageSets list, COCO instances_<split>).")
_names = click.option(
    "--names", help="YOLO folders without a YAML: the class names, comma-separated or a file with one per line."
)


@main.group()
def data() -> None:
    """Datasets: make a synthetic one, convert, inspect, draw."""


_set = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a config value, e.g. --set train.optimizer.lr=0.01 (repeatable; YAML values).")


def _config(path: str, overrides) -> dict:
    from detkit.config import load_config

    return load_config(path, list(overrides))


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--images", default=1000, show_default=True, help="Number of images.")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed writes the same dataset.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@click.option("--crowded", is_flag=True, help="Crowds of heavily overlapping objects of one class (for NMS studies).")
@click.option("--dense", is_flag=True,
              help="Dense crowds (for Adaptive-NMS): most crowds translucent, neighbours at IoU 0.5-0.85.")
@click.option("--workers", default=1, show_default=True, help="Processes generating images.")
@user_errors
def data_synth(out, images, seed, size, crowded, dense, workers):
    """Write a synthetic COCO dataset of shapes on textured backgrounds.

    Objects of five shape classes in all of COCO's size ranges, partly occluding each
    other, annotated by their visible extent; OUT/annotations.json and OUT/images/.
    """
    from detkit.data.synthetic import generate

    path = generate(out, images, seed, size=size, crowded="dense" if dense else crowded, workers=workers, progress=True)
    click.echo(f"wrote {path} ({images} images)")


@data.command("convert")
@click.argument("dataset")
@click.option("--to", "to", required=True, type=click.Choice(["coco", "yolo", "voc"]), help="The format to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@_split
@_names
@click.option("--images", default="copy", show_default=True, type=click.Choice(["copy", "link", "none"]),
              help="Copy the images, link them (symbolic links), or write annotations only.")
@click.option("--force", is_flag=True, help="Write even over the source's own annotation files.")
@user_errors
def data_convert(dataset, to, out, split, names, images, force):
    """Convert DATASET to another format (COCO json, YOLO txt, VOC xml).

    \b
    DATASET is a COCO json (or a folder with annotations.json), a YOLO data YAML (or an
    images/<split> folder), or a VOC folder; the format is told from the path.
    Images already in OUT are never overwritten; the source's annotations are not
    either, unless --force. COCO to COCO keeps every field (segmentation, info, ...).
    """
    from detkit.data import convert

    index = _open(dataset, split, names)
    output_folder(out, "--out")
    path = convert(index, to, out, split=split or "train", images=images, force=force)
    click.echo(f"wrote {path}: {len(index.records)} images, {sum(len(r.boxes) for r in index.records)} annotations")
    if index.issues:
        click.echo(index.issues.summary(), err=True)


@data.command("stats")
@click.argument("dataset")
@_split
@_names
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the numbers as json.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG histogram of object sizes.")
@click.option("--anchors", "anchors_config", type=click.Path(dir_okay=False),
              help="A train config: how its model's anchors cover the boxes, and anchors fitted to them.")
@_set
@user_errors
def data_stats(dataset, split, names, json_out, plot, anchors_config, overrides):
    """Images, objects per class and object sizes (against COCO's small/medium/large) of DATASET.

    \b
    DATASET is a COCO json (or a folder with annotations.json), a YOLO data YAML (or an
    images/<split> folder), or a VOC folder; the format is told from the path.

    \b
    With --anchors CONFIG (Faster R-CNN, RetinaNet, EfficientDet): each object's best IoU with
    the model's anchors at its input size, and anchors fitted to the boxes (ratios by k-means
    on log h/w, sizes an octave per level from the base of best mean IoU), as --set options:
      detkit data stats data/shapes/train --anchors configs/quickstart.yaml
    """
    from detkit.data import read_names
    from detkit.data.stats import format_stats, plot_sizes, stats_of

    for option, path in (("--json", json_out), ("--plot", plot)):
        if path:
            output_file(path, option)
    every, notes = stats_of(dataset, split=split, names=read_names(names))
    for note in notes:
        click.echo(note + "\n")
    for stats in every:
        click.echo(format_stats(stats) + ("\n" if len(every) > 1 else ""))
    anchors = None
    if anchors_config:
        from detkit.data import open_dataset
        from detkit.data.anchor_fit import anchor_report, format_anchor_report

        if len(every) > 1:
            raise click.UsageError("--anchors fits one dataset: choose its split with --split")
        model = _config(anchors_config, overrides).get("model") or {}
        anchors = anchor_report(open_dataset(dataset, split=split, names=read_names(names)), model)
        click.echo("\n" + format_anchor_report(anchors))
    if json_out:
        numbers = [{k: v for k, v in stats.items() if k != "side_px"} for stats in every]
        if anchors is not None:
            numbers[0]["anchors"] = anchors
        Path(json_out).write_text(json.dumps(numbers[0] if len(numbers) == 1 else numbers, indent=2))
    if plot:
        for stats in every:
            stem = Path(plot).stem if len(every) == 1 else f"{Path(plot).stem}-{Path(stats['source']).stem}"
            click.echo(f"wrote {plot_sizes(stats, Path(plot).with_stem(stem))}")


@data.command("show")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the drawn images.")
@_split
@_names
@click.option("--max-images", default=16, show_default=True, help="How many images to draw (the first ones).")
@user_errors
def data_show(dataset, out, split, names, max_images):
    """Draw the ground truth of DATASET on its images.

    \b
    DATASET is a COCO json (or a folder with annotations.json), a YOLO data YAML (or an
    images/<split> folder), or a VOC folder; the format is told from the path.
    """
    from detkit.visualize import draw_dataset

    index = _open(dataset, split, names)
    out = output_folder(out, "--out")
    written, skipped = draw_dataset(index, out, max_images)
    for reason in skipped:
        click.echo(f"skipped {reason}", err=True)
    click.echo(f"drew {written} images in {out}" + (f"; skipped {len(skipped)} unreadable" if skipped else ""))


# ------------------------------------------------------------------------------ train / eval / predict

@main.command("train")
@click.argument("config", type=click.Path(dir_okay=False))
@_set
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: train.out, or runs/<config name>).")
@click.option("--resume", is_flag=True, help="Continue the run in its folder from last.pth, exactly where it stopped.")
@user_errors
def train_command(config, overrides, out, resume):
    """Train the detector of CONFIG (a YAML file in configs/) and evaluate it on data.val.

    \b
    Writes to the run folder: config.yaml (the resolved config), last.pth (every epoch, and
    every train.checkpoint_every steps), best.pth (best COCO AP), metrics.jsonl (and
    TensorBoard logs when tensorboard is installed). Checkpoints are written atomically.
    Under torchrun (torchrun --nproc_per_node N -m detkit.cli train CONFIG) each process
    trains on its share of every epoch (DistributedDataParallel; gloo on CPUs).
    """
    from detkit.engine import Interrupted, NonFiniteLoss, train

    cfg = _config(config, overrides)
    if out:
        cfg["train"]["out"] = out
    output_folder(cfg["train"]["out"] or Path("runs") / cfg["name"], "--out" if out else "train.out")
    try:
        result = train(cfg, resume=resume)
    except NonFiniteLoss as error:
        raise click.ClickException(str(error)) from None
    except Interrupted as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: the last checkpoint is whole; continue with --resume") from None
    if not result.main:  # under torchrun, rank 0 speaks for all
        return
    click.echo(f"run folder: {result.out}  (last: {result.last.name}"
               f"{', best: ' + result.best.name if result.best else ''})")
    if result.evaluation is not None:
        click.echo(result.evaluation.table())


@main.command("eval")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), help="With CONFIG: the checkpoint (e.g. runs/x/best.pth).")
@_set
@click.option("--postprocess", help="With CONFIG: another suppressor, as YAML, e.g. '{type: soft_nms, sigma: 0.5}'.")
@click.option("--gt", type=click.Path(exists=True, dir_okay=False),
              help="Without CONFIG: ground truth, a COCO instances json.")
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False),
              help="Without CONFIG: detections, a COCO results json ([{image_id, category_id, bbox, score}]).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl and per-class AP.")
@click.option("--plots", type=click.Path(file_okay=False), help="Also write PR curves (pr_curves.png) here.")
@click.option("--errors", is_flag=True,
              help="Also say why it misses: TIDE's six errors with the AP each would add if fixed, per-class "
                   "AP50, a confusion matrix, AP and recall by crowding and by size; with a model, each "
                   "unmatched object as suppressed or never proposed. Into --json under 'errors'; with "
                   "--plots, errors.png and confusion.png.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "numpy", "pycocotools", "faster-coco-eval"]),
              help="Who computes: the same numbers. auto = numpy, detkit's own vectorised evaluation (27x "
                   "pycocotools on a 2,000-image file, 3x faster-coco-eval); the others are the peers it is held to.")
@user_errors
def eval_(config, weights, overrides, postprocess, gt, predictions, json_out, plots, errors, backend):
    """COCO bbox evaluation: the 12 standard numbers and per-class AP.

    \b
    Two ways:
      detkit eval CONFIG --weights W        run the model on the config's data.val
      detkit eval --gt GT --predictions R   evaluate a results file, no model
    With a model, --postprocess (or --set model.postprocess.KEY=...) re-runs the
    post-processing with another suppressor, without retraining. --errors adds
    the error analysis (docs/evaluation.md has the definitions).
    """
    from detkit.evaluation import plot_pr_curves, write_json

    if json_out:
        output_file(json_out, "--json")
    if plots:
        output_folder(plots, "--plots")
    if config:
        from detkit.config import parse_yaml
        from detkit.engine import evaluate_checkpoint

        if weights is None:
            raise click.UsageError("detkit eval CONFIG needs --weights")
        if postprocess:
            postprocess = parse_yaml(postprocess, "--postprocess")
            if not isinstance(postprocess, dict):
                raise click.UsageError("--postprocess must be a YAML mapping such as '{type: soft_nms, sigma: 0.5}', "
                                       f"got {postprocess!r}")
        evaluation = evaluate_checkpoint(_config(config, overrides), weights, postprocess=postprocess or None,
                                         backend=backend, errors=errors)
    else:
        from detkit.evaluation import evaluate_file

        if gt is None or predictions is None:
            raise click.UsageError("give CONFIG --weights W, or --gt and --predictions")
        evaluation = evaluate_file(gt, predictions, backend=backend, errors=errors)
    _print_evaluation(evaluation)
    if errors:
        from detkit.evaluation.errors import format_analysis

        click.echo("\n" + format_analysis(evaluation.extra["errors"]))
    if json_out:
        click.echo(f"wrote {write_json(evaluation, json_out)}")
    if plots:
        click.echo(f"wrote {plot_pr_curves(evaluation, Path(plots) / 'pr_curves.png')}")
        if errors:
            from detkit.evaluation.plots import plot_errors

            for path in plot_errors(evaluation.extra["errors"], plots):
                click.echo(f"wrote {path}")


def _print_evaluation(evaluation) -> None:
    click.echo(evaluation.table())
    width = max(len(n) for n in evaluation.per_class)
    click.echo("\n per-class AP@[.5:.95]:")
    for name, ap in evaluation.per_class.items():
        click.echo(f"  {name:<{width}}  {ap:.3f}" if ap > -1 else f"  {name:<{width}}  -")


@main.command("predict")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--weights", type=click.Path(dir_okay=False), help="The checkpoint (or --onnx).")
@click.option("--onnx", "onnx_file", type=click.Path(dir_okay=False, exists=True),
              help="Run this file from detkit export with onnxruntime instead of a checkpoint.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for drawn images and predictions.json.")
@click.option("--score-threshold", default=0.3, show_default=True, help="Draw detections scoring at least this.")
@_set
@user_errors
def predict_command(config, images, weights, onnx_file, out, score_threshold, overrides):
    """Detect objects on IMAGES (files or folders, any sizes) and draw them.

    Writes each image with its boxes, class names and scores to OUT, and every detection to
    OUT/predictions.json (COCO results with the file name of each image). With --onnx, the
    exported file runs in onnxruntime (pip install -e ".[export]") and draws the same pictures;
    it takes the size it was exported for, or any with --dynamic.
    """
    from detkit.engine import predict_checkpoint

    if (weights is None) == (onnx_file is None):
        raise click.UsageError("give the model as --weights CHECKPOINT or as --onnx FILE (one of them)")
    cfg = _config(config, overrides)
    out = output_folder(out, "--out")
    if onnx_file is not None:
        from detkit.engine.inference import predict_images
        from detkit.export.onnx import OnnxPredictor

        try:
            model = OnnxPredictor(onnx_file)
        except ImportError as error:
            raise click.ClickException(str(error)) from None
        written = predict_images(model, images, out, eval_transforms=cfg["data"]["eval_transforms"],
                                 score_threshold=score_threshold)
    else:
        written = predict_checkpoint(cfg, images, weights, out, score_threshold=score_threshold)
    for path, reason in written.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(f"drew the detections on {len(written.pictures)} images in {out}; all of them in {written.json}"
               + (f"; {len(written.skipped)} images skipped (unreadable, or a size the model cannot take)" if written.skipped else ""))


@main.command("export")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--weights", required=True, type=click.Path(dir_okay=False), help="The checkpoint.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file to write.")
@click.option("--postprocess", help="Another suppressor than the config's, as YAML, e.g. '{type: soft_nms, sigma: 0.5}'.")
@click.option("--size", nargs=2, type=int, default=None, metavar="H W",
              help="The images' size the graph takes (default: the transform's fixed size, else min_size square).")
@click.option("--batch", default=1, show_default=True, help="Images per call.")
@click.option("--dynamic", is_flag=True,
              help="Take images of any height and width (every family; SSD only with a fixed_size or letterbox transform).")
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@_set
@user_errors
def export_command(config, weights, out, postprocess, size, batch, dynamic, opset, overrides):
    """Export CONFIG's detector to ONNX, pre- and post-processing inside the graph.

    \b
    The graph takes uint8 images [batch, 3, H, W] (RGB) and returns boxes [batch, C, 4]
    (xyxy, input pixels), scores [batch, C], labels [batch, C] and count [batch]: the first
    count rows of each image are its detections, C the model's detections cap. The model's
    suppressor (or --postprocess: nms, soft_nms, adaptive_nms, diou_nms) runs inside the
    graph, exactly. Every detector: Faster R-CNN, RetinaNet, EfficientDet, SSD, YOLO. The
    size is fixed at export (--size), or any with --dynamic: the resize, the network's input,
    its levels and anchors then follow each image's size as detkit predict's do. Needs
    pip install -e ".[export]"; docs/export.md has the details.
    """
    from detkit.config import parse_yaml
    from detkit.export.onnx import export_checkpoint

    if postprocess:
        postprocess = parse_yaml(postprocess, "--postprocess")
        if not isinstance(postprocess, dict):
            raise click.UsageError("--postprocess must be a YAML mapping such as '{type: soft_nms, sigma: 0.5}', "
                                   f"got {postprocess!r}")
    try:
        path = export_checkpoint(_config(config, overrides), weights, output_file(out, "--out"),
                                 postprocess=postprocess or None, size=size, batch=batch, opset=opset,
                                 dynamic=dynamic)
    except ImportError as error:  # the export extra is missing: say what to install
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {path}")


@main.command("quickstart")
@click.option("--out", default="runs/quickstart", show_default=True, type=click.Path(file_okay=False),
              help="Run folder.")
@click.option("--minutes", default=None, type=float,
              help="Time guard: training stops there even before its 450 steps, and says so (default: the "
                   "config's, 9 min).")
@_set
@user_errors
def quickstart(out, minutes, overrides):
    """Train and evaluate a small Faster R-CNN on the built-in synthetic dataset, on a CPU.

    Generates the dataset on first use (data/shapes/), trains configs/quickstart.yaml for
    450 steps (about 6 minutes on 2 cores; the same model on every machine), then prints
    the COCO table and where the checkpoint and the drawn predictions are.
    """
    from detkit.engine import quickstart as run_quickstart

    cfg = _config(str(_configs() / "quickstart.yaml"), overrides)
    cfg["train"]["out"] = str(output_folder(out, "--out"))
    if minutes is not None:
        from detkit.config import LIMITS

        cfg["train"]["time_limit_min"] = LIMITS["train.time_limit_min"].check(minutes, "--minutes")
    done = run_quickstart(cfg)
    click.echo("\nCOCO evaluation on the synthetic val split:")
    _print_evaluation(done.run.evaluation)
    click.echo(f"\ncheckpoint: {done.checkpoint}\npredictions drawn: {done.predictions.json.parent}\n"
               f"metrics: {done.run.out / 'metrics.jsonl'}")


# ------------------------------------------------------------------------------ compare


@main.command("compare")
@click.option("--suite", "suites", multiple=True, default=("all",), show_default=True,
              type=click.Choice(["all", "detectors", "focal", "necks", "backbones", "nms"]),
              help="Which comparison (repeatable): two-stage vs one-stage detectors, focal loss vs cross-entropy, "
                   "FPN vs BiFPN, ResNet vs EfficientNet, the suppressors. With a sweep (cpu-long) it chooses which "
                   "runs a sitting trains; results.json and the report keep every other suite recorded under OUT.")
@click.option("--budget", default="cpu", show_default=True, metavar="smoke|cpu|cpu-long|full|STUDY.yaml",
              help="smoke: every suite in about a minute (checks the machinery, not the claims); cpu: the whole "
                   "study on a 2-core CPU in under 3 hours; cpu-long: the contested claims at 1x, 2x and 4x its "
                   "steps, BatchNorm and GroupNorm (about 19 h, resumable from its recorded runs); full: the COCO "
                   "recipe for GPUs with pretrained backbones; or a study file of your own (configs/compare/*.yaml "
                   "show the format).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for report.md, results.json and the PNG plots.")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False),
              help="Folder of the trained runs (default: runs/compare/<budget>-seed<seed>). A run finished there "
                   "is loaded, not retrained; an interrupted one resumes.")
@click.option("--seed", type=int, help="The training seed of every run (default: the study's, 0).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a study value, e.g. --set recipe.train.epochs=2 or "
                   "--set datasets.shapes.synthetic.out=/tmp/shapes (repeatable; YAML values).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False),
              help="An earlier results.json: the report adds how this run reproduces its numbers.")
@click.option("--reuse", type=click.Path(exists=True, dir_okay=False),
              help="An earlier results.json whose runs of exactly the same config are recorded from it instead of "
                   "trained and evaluated (with a sweep, e.g. docs/compare/cpu/results.json: the 1x runs; with the nms "
                   "suite, a run needs its suppressor tables there too).")
@click.option("--plan", is_flag=True, help="List the runs the suites need (model, data, steps) and exit; with a "
                                           "sweep, which are recorded in OUT/runs and the time left.")
@click.option("--report-only", is_flag=True,
              help="Rebuild report.md and the plots from OUT/results.json (verdicts re-judged); train nothing.")
@user_errors
def compare_command(suites, budget, out, runs_dir, seed, overrides, reference, reuse, plan, report_only):
    """Reproduce the survey's detection comparisons under one declared budget.

    \b
    Trains (or loads) every model the suites need with the same recipe, evaluates all on the
    same validation split, measures parameters, GFLOPs and latency, and judges each claim of
    the survey against the papers' published numbers: reproduced, not reproduced at this
    budget, or not measurable here, with the noise the verdict is judged against (bootstrap
    over images, and the spread over training seeds).

    \b
      detkit compare --budget smoke --out /tmp/cmp            # a minute: the machinery
      detkit compare --suite nms --budget cpu --out cmp/nms   # one suite
      detkit compare --budget cpu --out cmp --reference docs/compare/cpu/results.json
      detkit compare --budget cpu-long --out docs/compare/cpu-long --reuse docs/compare/cpu/results.json

    \b
    cpu-long sweeps the contested claims over 1x, 2x and 4x the cpu budget's steps with the
    BatchNorm and the GroupNorm recipe. Each finished run's measurements are written at once
    to OUT/runs/<run>.json and the report rebuilt; a run recorded there is not trained again,
    so the sweep continues across sittings and machines from what is committed (--plan says
    what is left).

    \b
    Writes OUT/report.md, OUT/results.json (configs, seeds, versions, hardware) and PNGs:
    speed_accuracy, ap_by_size, pr_curves, training, nms, nms_sweep (with a sweep: one
    sweep_<claim>.png per claim, its difference against training steps).
    """
    import shlex

    from detkit.compare import compare, load_study, rebuild_report
    from detkit.compare.schema import load_results

    out = Path(out)
    if report_only:
        for written in rebuild_report(out):
            click.echo(f"wrote {written}")
        return
    if not plan:
        output_folder(out, "--out")
    study = load_study(budget, list(overrides), seed=seed, runs_dir=runs_dir)
    chosen = study.chosen(suites)
    reused = load_results(reuse) if reuse else None
    if plan:
        click.echo("\n".join(study.plan(chosen, out=out, reuse=reused)))
        return
    reference_results = load_results(reference) if reference else None
    command = "detkit " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "detkit compare"
    results = compare(study, chosen, out, command=command, reference=reference_results, say=click.echo,
                      reuse=reused)
    if not results:  # a torchrun process other than rank 0: it trained its share
        return
    click.echo(f"\nwrote {out / 'report.md'}, {out / 'results.json'} and the plots")
    for claim in results["claims"]:
        click.echo(f"  {claim['id']:<30} {claim['verdict']}")


def _configs() -> Path:
    from detkit.config import shipped_configs

    try:
        return shipped_configs()
    except ValueError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
