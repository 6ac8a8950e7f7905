"""The ``detkit`` command line (click). Each subcommand lives in its own function below."""

from __future__ import annotations

import click

from detkit import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="detkit")
def main() -> None:
    """detkit: train, evaluate and compare object detectors.

    detkit builds detectors (Faster R-CNN, RetinaNet, SSD, YOLO, EfficientDet) from YAML
    configs, with swappable backbones, necks and post-processing (NMS, Soft-NMS,
    Adaptive-NMS, DIoU-NMS), and evaluates them with COCO mAP identical to pycocotools.

    Run `detkit COMMAND --help` for the options of a command.
    """


if __name__ == "__main__":
    main()
