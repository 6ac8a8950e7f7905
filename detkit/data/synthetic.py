"""Synthetic shapes: detkit's built-in object-detection dataset, generated in COCO format.

Solid shapes of five classes on a textured, noisy background. Small enough to train a
detector on a 2-core CPU in minutes (the quickstart), and with a crowded mode for
studying suppression (NMS vs Soft-NMS vs Adaptive-NMS).

Layout written by ``generate(out, ...)``::

    out/images/000000.jpg, 000001.jpg, ...   RGB, size x size, JPEG quality 95
    out/annotations.json                     COCO instances, image ids from 1

Classes (category ids 1..5, in the order of ``CLASSES``) differ only in outline: every
object gets a random colour, so colour carries no class information.

- ``ellipse``: a circle stretched to an aspect ratio of up to 2, at any angle;
- ``rectangle``: a square stretched to up to 2, turned by up to 15 degrees;
- ``triangle``: apex above the middle third of the base, aspect up to 1.5, at any angle;
- ``star``: five points, inner radius 0.40..0.55 of the outer, aspect up to 1.25, any angle;
- ``cross``: a plus sign, arms 0.30..0.45 of its side thick, aspect up to 1.33, turned by up to 20 degrees.

Every shape is a polygon filled with ``cv2.fillPoly`` without anti-aliasing, so an
object's mask is exactly the pixels painted in its colour. Colours are random but keep a
distance from the background around the object and from the objects it touches, so every
outline can be seen. Backgrounds: a gradient between four random corner colours, value
noise at 64, 32, 16 and 8 px, up to 3 thin distractor lines, and gaussian pixel noise over
everything.

Sizes. Each object's size is the side of the square of equal area, drawn from three bands
that match COCO's area ranges: 35% small (10..30 px, area < 32^2), 45% medium (34..90 px),
20% large (100 px .. 0.8 * size, area > 96^2). A shape too big for the image is shrunk to fit.

Occlusion. Objects are painted in order, later ones over earlier ones, and the annotations
describe the visible part, as COCO's do: ``segmentation`` is the visible mask (RLE),
``area`` its pixel count, ``bbox`` its extent ``[x, y, w, h]``. An object less than half
visible (less than 30% for a crowd member) is dropped before painting, so every shape in an
image is annotated and every annotation is visible.

Normal mode: 1..8 objects of random classes, sizes and places. Crowded mode
(``crowded=True``): 1..2 crowds plus 0..3 lone objects. A crowd is 3..7 objects of one class
and similar size in a diagonal row, each placed so that its box and the previous one's
overlap with an IoU drawn from 0.3..0.7, lowered where it would hide so much of the previous
one that it would be dropped. Occlusion trims the visible boxes, so neighbours' annotated
boxes overlap with IoU mostly 0.3..0.55, and over half the images hold a same-class pair
above 0.5: the case where NMS suppresses true objects.

Dense mode (``crowded="dense"``), for Adaptive-NMS: crowds as above, but each crowd is, with
probability 0.6, a *dense* crowd instead: its members are painted translucent (alpha 0.6, so
every outline stays visible through the ones in front and nothing is hidden) and neighbours'
boxes overlap at IoU 0.5..0.85. The annotated box is then the whole shape, and objects'
densities (max IoU with another object) reach 0.8, as in pedestrian crowds (CrowdHuman's
full-body boxes); the opaque crowds keep the crowded mode's 0.3..0.55. The two kinds share
one training set, so one detector is evaluated on both crowded splits.

Each annotation carries a detkit field ``group``: 0 for a lone object, k >= 1 for a member
of the image's k-th crowd. ``info["detkit_synthetic"]`` records the parameters.

Determinism. Image i is drawn from ``np.random.default_rng([seed, i])`` alone, so the same
(images, seed, size, crowded) gives byte-identical files whatever ``workers`` is, and image
i is the same whatever the number of images.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

__all__ = ["CLASSES", "generate"]

# Bump whenever the output for given parameters changes, so an old dataset is not reused.
GENERATOR_VERSION = 1

JPEG_QUALITY = 95  # high enough that the compression barely blurs the object edges

# --------------------------------------------------------------------------- scene parameters

MAX_OBJECTS = 8  # normal mode: 1..8 objects, enough occlusion without clutter
SMALL_SIDES = (10, 30)  # area 100..900 px: COCO "small" (< 32^2)
MEDIUM_SIDES = (34, 90)  # area 1156..8100 px: COCO "medium" (32^2..96^2)
LARGE_SIDE_MIN = 100  # area >= 10000 px: COCO "large" (> 96^2) ...
LARGE_SIDE_MAX = 0.8  # ... up to 0.8 * size, so one large object leaves room for others
BAND_CUMULATIVE = (0.35, 0.80)  # P(small) = 0.35, P(medium) = 0.45, P(large) = 0.20

MIN_VISIBLE = 0.5  # a lone object less visible than this is dropped: it would be a guess
MIN_VISIBLE_IN_CROWD = 0.3  # crowd members may hide more: that is what makes a crowd hard

CROWDS = (1, 2)  # crowded mode: crowds per image
CROWD_MEMBERS = (3, 7)  # objects per crowd
CROWD_LONE = (0, 3)  # lone objects beside the crowds
CROWD_SIDE = (14, 0.2)  # a crowd's typical side: 14 px .. 0.2 * size, so a row of 7 fits
CROWD_SIDE_JITTER = 0.15  # members' sides differ by up to +-15%: similar, not identical
NEIGHBOUR_IOU = (0.3, 0.7)  # box IoU aimed at between neighbours in a row
DENSE_SHARE = 0.6  # dense mode: the share of crowds that are dense (translucent, heavy overlap)
DENSE_IOU = (0.5, 0.85)  # box IoU between neighbours of a dense crowd (nothing hidden: none lowered)
DENSE_ALPHA = 0.6  # opacity of a dense crowd's members: the ones behind show through
# Rows run diagonally (25..65 degrees off the axes): a member then hides a corner of the
# previous one, whose visible part keeps its full extent; along an axis it would hide a
# whole strip, shrinking the visible box away from its neighbour's.
ROW_ANGLE = (25.0, 65.0)
ROW_BEND = 10.0  # degrees each step may turn, so rows are not ruler-straight
# A member may cover at most 65% of the one before: 5 points below the 70% that would get
# that one dropped, for what the member after next, unequal sizes and rasterizing add.
MAX_COVERED = 1 - MIN_VISIBLE_IN_CROWD - 0.05
IOU_BACKOFF = 0.05  # how fast the aimed-at IoU is lowered until the previous member stays visible
COVER_RASTER = 64  # px across the raster that measures coverage: fine enough, and cheap

# --------------------------------------------------------------------------- appearance

# (feature size in px, amplitude in grey levels) of the value-noise octaves: blotches
# from coarse to fine, so the background has texture at every scale a detector looks at
NOISE_OCTAVES = ((64, 28.0), (32, 18.0), (16, 11.0), (8, 7.0))
PIXEL_NOISE = 6.0  # std of the per-pixel gaussian noise over everything, sensor-like
DISTRACTORS = 3  # up to 3 thin lines: clutter that is plainly not a shape
MIN_CONTRAST = 80.0  # RGB distance an object's colour keeps from its surroundings
COLOUR_TRIES = 20  # random colours tried before taking the most contrasting one
MARGIN = 2  # px kept between a shape's outline and the image border
SUBPIXEL_BITS = 4  # fillPoly's fixed-point bits: outlines placed to 1/16 px


# --------------------------------------------------------------------------- shapes


def _ellipse_outline(rng: np.random.Generator) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * math.pi, 128, endpoint=False)  # within 0.1 px of round up to 800 px
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) / 2


def _rectangle_outline(rng: np.random.Generator) -> np.ndarray:
    return np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _triangle_outline(rng: np.random.Generator) -> np.ndarray:
    apex = rng.uniform(-1 / 6, 1 / 6)
    return np.array([[apex, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _star_outline(rng: np.random.Generator) -> np.ndarray:
    inner = rng.uniform(0.40, 0.55)
    angles = -math.pi / 2 + np.arange(10) * math.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.5 * inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_outline(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0.30, 0.45) / 2  # half the arm's thickness
    return np.array(
        [[-t, -0.5], [t, -0.5], [t, -t], [0.5, -t], [0.5, t], [t, t],
         [t, 0.5], [-t, 0.5], [-t, t], [-0.5, t], [-0.5, -t], [-t, -t]]
    )  # fmt: skip


@dataclass(frozen=True)
class _Shape:
    """A class: its unit outline (float[V, 2], x y, centred, about 1 across) and how it varies."""

    name: str
    outline: Callable[[np.random.Generator], np.ndarray]
    max_aspect: float  # width / height is drawn log-uniformly from [1 / max_aspect, max_aspect]
    max_rotation: float  # degrees, drawn uniformly from [-max_rotation, max_rotation]


_SHAPES = (
    _Shape("ellipse", _ellipse_outline, max_aspect=2.0, max_rotation=90.0),
    _Shape("rectangle", _rectangle_outline, max_aspect=2.0, max_rotation=15.0),
    _Shape("triangle", _triangle_outline, max_aspect=1.5, max_rotation=180.0),
    _Shape("star", _star_outline, max_aspect=1.25, max_rotation=36.0),
    _Shape("cross", _cross_outline, max_aspect=1.33, max_rotation=20.0),
)

CLASSES: tuple[str, ...] = tuple(shape.name for shape in _SHAPES)
"""The category names, in category-id order (ids 1..K)."""


@dataclass
class _Object:
    category: int  # 1..K
    outline: np.ndarray  # float[V, 2], (x, y) in absolute pixels
    min_visible: float  # dropped when less than this fraction of its pixels is visible
    group: int  # 0: a lone object; k >= 1: a member of the image's k-th crowd
    alpha: float = 1.0  # opacity: 1 hides what is below; less lets it show through (dense crowds)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _outline(rng: np.random.Generator, shape: _Shape, side: float, aspect: float, rotation: float) -> np.ndarray:
    """The shape stretched to ``aspect``, turned by ``rotation`` degrees and scaled to area side^2.

    Returns float[V, 2], (x, y), centred on its box."""
    points = shape.outline(rng) * [math.sqrt(aspect), 1 / math.sqrt(aspect)]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    points = points @ np.array([[c, s], [-s, c]])
    points *= side / math.sqrt(_polygon_area(points))
    return points - (points.min(axis=0) + points.max(axis=0)) / 2


def _aspect(rng: np.random.Generator, shape: _Shape) -> float:
    return math.exp(rng.uniform(-1.0, 1.0) * math.log(shape.max_aspect))


def _rotation(rng: np.random.Generator, shape: _Shape) -> float:
    return rng.uniform(-shape.max_rotation, shape.max_rotation)


def _side(rng: np.random.Generator, size: int) -> float:
    """A lone object's side (sqrt of its area) from the small, medium or large band."""
    u = rng.random()
    if u < BAND_CUMULATIVE[0]:
        return rng.uniform(*SMALL_SIDES)
    if u < BAND_CUMULATIVE[1]:
        return rng.uniform(*MEDIUM_SIDES)
    high = LARGE_SIDE_MAX * size
    return rng.uniform(min(LARGE_SIDE_MIN, high), high)


def _fit_and_place(rng: np.random.Generator, outlines: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Shrink a group of outlines (about the origin) until it fits, then move it to a random place.

    The group moves as one, so the overlaps inside it are kept."""
    low = np.min([o.min(axis=0) for o in outlines], axis=0)
    high = np.max([o.max(axis=0) for o in outlines], axis=0)
    room = size - 1 - 2 * MARGIN
    scale = min(1.0, room / float((high - low).max()))
    first, last = MARGIN - low * scale, size - 1 - MARGIN - high * scale  # where the origin may go
    offset = first + rng.random(2) * np.maximum(last - first, 0.0)  # max: rounding may leave last < first
    return [o * scale + offset for o in outlines]


# --------------------------------------------------------------------------- scenes


def _lone_object(rng: np.random.Generator, size: int) -> _Object:
    category = int(rng.integers(1, len(_SHAPES) + 1))
    shape = _SHAPES[category - 1]
    outline = _outline(rng, shape, _side(rng, size), _aspect(rng, shape), _rotation(rng, shape))
    (outline,) = _fit_and_place(rng, [outline], size)
    return _Object(category, outline, MIN_VISIBLE, group=0)


def _row_step(previous: np.ndarray, outline: np.ndarray, direction: np.ndarray, iou: float) -> float:
    """How far to move along ``direction`` (a unit vector, off the axes: ``ROW_ANGLE``) from
    ``previous`` to ``outline`` for their boxes to overlap with IoU ``iou``.

    Two w x h boxes shifted by (dx, dy) have IoU = q / (2 - q) with q = (1 - dx/w)(1 - dy/h);
    with dx = d |cos|, dy = d |sin|, q = 2 iou / (1 + iou) is a quadratic in d, whose
    smaller root is the step. Boxes of different sizes use their mean width and height."""
    extent = (np.ptp(previous, axis=0) + np.ptp(outline, axis=0)) / 2
    a, b = abs(direction[0]) / extent[0], abs(direction[1]) / extent[1]
    q = 2 * iou / (1 + iou)
    return ((a + b) - math.sqrt((a - b) ** 2 + 4 * a * b * q)) / (2 * a * b)


def _covered_fraction(below: np.ndarray, above: np.ndarray) -> float:
    """The fraction of the outline ``below``'s area that ``above`` covers, measured on a
    raster ``COVER_RASTER`` px across (outlines float[V, 2], any scale)."""
    low = np.minimum(below.min(axis=0), above.min(axis=0))
    high = np.maximum(below.max(axis=0), above.max(axis=0))
    scale = (COVER_RASTER - 1) / float((high - low).max())
    below_mask = _rasterize((below - low) * scale, COVER_RASTER)
    above_mask = _rasterize((above - low) * scale, COVER_RASTER)
    return np.count_nonzero(below_mask & above_mask) / max(1, np.count_nonzero(below_mask))


def _next_in_row(previous: np.ndarray, outline: np.ndarray, direction: np.ndarray, iou: float,
                 hides: bool = True) -> np.ndarray:
    """``outline`` (centred on its box) moved to follow ``previous`` along ``direction``, their
    boxes overlapping with IoU ``iou``; when it ``hides`` what it covers (opaque), the IoU is
    lowered in steps of ``IOU_BACKOFF`` while it would cover more than ``MAX_COVERED`` of
    ``previous`` (which would then be dropped)."""
    centre = (previous.min(axis=0) + previous.max(axis=0)) / 2
    while True:
        placed = outline + centre + _row_step(previous, outline, direction, iou) * direction
        if not hides or iou <= NEIGHBOUR_IOU[0] or _covered_fraction(previous, placed) <= MAX_COVERED:
            return placed
        iou -= IOU_BACKOFF


def _crowd(rng: np.random.Generator, size: int, group: int, dense: bool = False) -> list[_Object]:
    """3..7 objects of one class and similar size in a diagonal row, in painting order;
    ``dense``: translucent members overlapping at ``DENSE_IOU``."""
    category = int(rng.integers(1, len(_SHAPES) + 1))
    shape = _SHAPES[category - 1]
    members = int(rng.integers(CROWD_MEMBERS[0], CROWD_MEMBERS[1] + 1))
    side = rng.uniform(CROWD_SIDE[0], max(CROWD_SIDE[0], CROWD_SIDE[1] * size))
    aspect, rotation = _aspect(rng, shape), _rotation(rng, shape)
    heading = math.radians(rng.uniform(*ROW_ANGLE))
    signs = rng.choice([-1.0, 1.0], size=2)  # which of the four diagonals
    outlines: list[np.ndarray] = []
    for _ in range(members):
        jitter = 1 + rng.uniform(-CROWD_SIDE_JITTER, CROWD_SIDE_JITTER)
        outline = _outline(rng, shape, side * jitter, aspect, rotation + rng.uniform(-5.0, 5.0))
        if outlines:
            angle = heading + math.radians(rng.uniform(-ROW_BEND, ROW_BEND))
            direction = signs * [math.cos(angle), math.sin(angle)]
            iou = rng.uniform(*(DENSE_IOU if dense else NEIGHBOUR_IOU))
            outline = _next_in_row(outlines[-1], outline, direction, iou, hides=not dense)
        outlines.append(outline)
    outlines = _fit_and_place(rng, outlines, size)
    alpha = DENSE_ALPHA if dense else 1.0
    return [_Object(category, o, MIN_VISIBLE_IN_CROWD, group, alpha) for o in outlines]


def _scene(rng: np.random.Generator, size: int, crowded: bool | str) -> list[_Object]:
    """The candidate objects of one image, in painting order (before occlusion drops any)."""
    if not crowded:
        return [_lone_object(rng, size) for _ in range(int(rng.integers(1, MAX_OBJECTS + 1)))]
    groups = [_crowd(rng, size, k + 1, dense=crowded == "dense" and bool(rng.random() < DENSE_SHARE))
              for k in range(int(rng.integers(CROWDS[0], CROWDS[1] + 1)))]
    groups += [[_lone_object(rng, size)] for _ in range(int(rng.integers(CROWD_LONE[0], CROWD_LONE[1] + 1)))]
    return [obj for i in rng.permutation(len(groups)) for obj in groups[i]]


def _rasterize(outline: np.ndarray, size: int) -> np.ndarray:
    """The pixels ``cv2.fillPoly`` paints for ``outline`` (float[V, 2], x y), without
    anti-aliasing (bool[size, size])."""
    mask = np.zeros((size, size), np.uint8)
    points = np.round(outline * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [points], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return mask.view(bool)


def _visible(objects: list[_Object], size: int) -> list[tuple[_Object, np.ndarray]]:
    """Drop the objects hidden too much by later ones; the rest with their visible masks.

    An object is hidden only by opaque objects painted after it, so deciding from the last
    painted back to the first settles each object once: the ones that hide it are already
    final. Returns (object, bool[size, size] visible pixels) in painting order."""
    covered = np.zeros((size, size), bool)
    kept = []
    for obj in reversed(objects):
        drawn = _rasterize(obj.outline, size)
        visible = drawn & ~covered
        shown = np.count_nonzero(visible)
        if shown == 0 or shown < obj.min_visible * np.count_nonzero(drawn):
            continue
        if obj.alpha >= 1:
            covered |= drawn
        kept.append((obj, visible))
    return kept[::-1]


# --------------------------------------------------------------------------- pixels


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour gradient between four random corners plus multi-scale value noise (uint8[H, W, 3]).

    Built on the finest octave's grid and upsampled once: everything in it is smooth at
    that scale, and one full-size resize costs a fraction of one per octave."""
    grid = max(2, round(size / NOISE_OCTAVES[-1][0]))
    corners = rng.uniform(0.0, 255.0, (2, 2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, grid, dtype=np.float32)[:, None]
    top = (1 - t) * corners[0, 0] + t * corners[0, 1]  # (grid, 3)
    bottom = (1 - t) * corners[1, 0] + t * corners[1, 1]
    low = (1 - t)[:, :, None] * top + t[:, :, None] * bottom  # (grid, 1, 1) * (grid, 3) -> (grid, grid, 3)
    for feature, amplitude in NOISE_OCTAVES:
        cells = max(2, round(size / feature))
        noise = rng.standard_normal((cells, cells, 3), dtype=np.float32)
        low += amplitude * cv2.resize(noise, (grid, grid), interpolation=cv2.INTER_CUBIC)
    low = np.clip(low, 0, 255).astype(np.uint8)
    return cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)


def _draw_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    """Up to ``DISTRACTORS`` thin lines across ``image`` (uint8[H, W, 3], in place), straight or
    bent once: open, so they never outline a shape."""
    size = image.shape[0]
    for _ in range(int(rng.integers(0, DISTRACTORS + 1))):
        points = rng.uniform(0, size, (int(rng.integers(2, 4)), 2)).astype(np.int32)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.polylines(image, [points], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)


def _pick_colour(rng: np.random.Generator, around: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """A random colour that stands out from the background pixels ``around`` it (float[N, 3])
    and from the colours of the objects it touches; the most contrasting of
    ``COLOUR_TRIES`` if none keeps ``MIN_CONTRAST``. Returns uint8[3]."""
    best, best_contrast = None, -1.0
    for _ in range(COLOUR_TRIES):
        colour = rng.integers(0, 256, 3).astype(np.uint8)
        contrast = math.inf
        if len(around):
            contrast = float(np.linalg.norm(around - colour, axis=1).mean())
        for other in neighbours:
            contrast = min(contrast, float(np.linalg.norm(other.astype(float) - colour)))
        if contrast >= MIN_CONTRAST:
            return colour
        if contrast > best_contrast:
            best, best_contrast = colour, contrast
    return best


def _paint(rng: np.random.Generator, background: np.ndarray, visible: list[np.ndarray],
           alphas: list[float]) -> np.ndarray:
    """Paint each visible mask in a colour of its own over ``background`` (uint8[H, W, 3]), with
    its opacity (translucent ones blended over what is already painted)."""
    owner = np.zeros(background.shape[:2], np.int32)  # 0: background, i + 1: object i
    for i, mask in enumerate(visible):
        owner[mask] = i + 1
    image = background.copy()
    colours: list[np.ndarray] = []
    ring_kernel = np.ones((5, 5), np.uint8)  # the 2 px just outside an object
    for i, mask in enumerate(visible):
        ring = cv2.dilate(mask.view(np.uint8), ring_kernel).view(bool) & ~mask
        ring_owners = owner[ring]
        around = background[ring][ring_owners == 0].astype(float)
        touching = [colours[j - 1] for j in np.unique(ring_owners) if 0 < j <= i]
        colours.append(_pick_colour(rng, around, touching))
        if alphas[i] >= 1:
            image[mask] = colours[-1]
        else:
            blended = alphas[i] * colours[-1].astype(np.float32) + (1 - alphas[i]) * image[mask].astype(np.float32)
            image[mask] = np.round(blended).astype(np.uint8)
    return image


def _annotation(obj: _Object, visible: np.ndarray) -> dict[str, Any]:
    """The COCO fields of one object, from its visible pixels (bool[H, W])."""
    rows = np.flatnonzero(visible.any(axis=1))
    cols = np.flatnonzero(visible.any(axis=0))
    x1, y1, x2, y2 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    rle = mask_utils.encode(np.asfortranarray(visible.view(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # bytes -> str, which json can hold
    return {
        "category_id": obj.category,
        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
        "area": float(np.count_nonzero(visible)),
        "segmentation": rle,
        "iscrowd": 0,
        "group": obj.group,
    }


def _render(index: int, seed: int, size: int, crowded: bool | str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Image ``index`` of the dataset: (uint8[size, size, 3] RGB, its annotations without ids)."""
    rng = np.random.default_rng([seed, index])
    background = _background(rng, size)
    _draw_distractors(rng, background)
    objects = _visible(_scene(rng, size, crowded), size)
    image = _paint(rng, background, [visible for _, visible in objects], [obj.alpha for obj, _ in objects])
    noise = PIXEL_NOISE * rng.standard_normal(image.shape, dtype=np.float32)
    image = cv2.add(image, noise, dtype=cv2.CV_8U)  # rounds and saturates to 0..255
    return image, [_annotation(obj, visible) for obj, visible in objects]


def _write_image(job: tuple[Path, int, int, int, bool | str]) -> list[dict[str, Any]]:
    """Render image ``index``, write it as ``images/{index:06d}.jpg``; return its annotations."""
    images_dir, index, seed, size, crowded = job
    image, annotations = _render(index, seed, size, crowded)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"generate: could not encode {images_dir / _file_name(index)}")
    _write_atomic(images_dir / _file_name(index), encoded.tobytes())
    return annotations


def _write_atomic(path: Path, data: bytes) -> None:
    """Write beside ``path`` under a name of this process's own, then rename into place: a
    reader never sees half a file, and processes generating the same dataset at once (every
    torchrun process of a run, two runs sharing data/shapes) never trip over each other."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _single_threaded_worker() -> None:
    cv2.setNumThreads(1)  # the processes already use every core; threads would only contend


def _file_name(index: int) -> str:
    return f"{index:06d}.jpg"


# --------------------------------------------------------------------------- the dataset


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"generate: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _parameters(images: Any, seed: Any, size: Any, crowded: Any) -> dict[str, Any]:
    """The validated parameters that decide the output, as recorded in ``info``."""
    if not isinstance(crowded, (bool, np.bool_)) and crowded != "dense":
        raise ValueError(f"generate: crowded must be True, False or 'dense', got {crowded!r}")
    return {
        "seed": _check_int(seed, "seed", 0),
        "size": _check_int(size, "size", 64),
        "crowded": crowded if crowded == "dense" else bool(crowded),
        "images": _check_int(images, "images", 1),
        "version": GENERATOR_VERSION,
    }


def _already_generated(path: Path, parameters: dict[str, Any]) -> bool:
    """True if ``path`` holds this very dataset; ``ValueError`` if it holds anything else."""
    try:
        recorded = json.loads(path.read_text())["info"]["detkit_synthetic"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded != parameters:
        what = "a different dataset" if recorded is None else f"a synthetic dataset generated with {recorded}"
        raise ValueError(
            f"generate: {path} already exists and holds {what}, not {parameters}; "
            "delete it or choose another output folder"
        )
    images_dir = path.parent / "images"
    missing = [i for i in range(parameters["images"]) if not (images_dir / _file_name(i)).is_file()]
    if missing:
        raise ValueError(
            f"generate: {path} matches but {len(missing)} of its images are missing "
            f"(first: {images_dir / _file_name(missing[0])}); delete {path.parent} and generate again"
        )
    return True


def _annotations_per_image(jobs: list, workers: int, progress: bool) -> Iterator[list[dict[str, Any]]]:
    """Each job's annotations, in job order, from this process or a pool of ``workers``."""
    with tqdm(total=len(jobs), disable=not progress, unit="image", desc="synthetic") as bar:
        if workers == 1:
            for job in jobs:
                yield _write_image(job)
                bar.update()
            return
        context = get_context("spawn")  # fork is unsafe with threads (torch, cv2) and absent on Windows
        chunk = max(1, min(32, len(jobs) // (4 * workers)))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_worker) as pool:
            for objects in pool.map(_write_image, jobs, chunksize=chunk):
                yield objects
                bar.update()


def generate(
    out: str | os.PathLike,
    images: int,
    seed: int = 0,
    *,
    size: int = 256,
    crowded: bool | str = False,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Write the synthetic-shapes dataset to ``out`` (see the module docstring).

    Args:
        out: the output folder, created if missing.
        images (int): how many images, >= 1.
        seed (int): >= 0; image i depends only on (seed, i).
        size (int): the images' width and height in pixels, >= 64.
        crowded (bool or "dense"): crowds of one class with heavily overlapping boxes (for
            NMS studies); "dense": most crowds translucent, overlapping at IoU up to 0.85.
        workers (int): processes rendering images, >= 1; the output does not depend on it.
        progress (bool): show a progress bar.

    Returns:
        Path: ``out / "annotations.json"``. If it already exists and was generated with the
        same (images, seed, size, crowded), nothing is written and its path is returned;
        if it holds anything else, ``ValueError``: a dataset is never overwritten.
    """
    parameters = _parameters(images, seed, size, crowded)
    workers = min(_check_int(workers, "workers", 1), parameters["images"])
    out = Path(out)
    path = out / "annotations.json"
    if path.exists() and _already_generated(path, parameters):
        return path
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    size = parameters["size"]
    jobs = [(images_dir, i, parameters["seed"], size, parameters["crowded"]) for i in range(parameters["images"])]
    coco_images, coco_annotations = [], []
    for index, objects in enumerate(_annotations_per_image(jobs, workers, progress)):
        image_id = index + 1
        coco_images.append({"id": image_id, "file_name": _file_name(index), "width": size, "height": size})
        for annotation in objects:
            coco_annotations.append({"id": len(coco_annotations) + 1, "image_id": image_id, **annotation})

    coco = {
        "info": {
            "description": "detkit synthetic shapes (detkit.data.synthetic)",
            "version": str(GENERATOR_VERSION),
            "detkit_synthetic": parameters,
        },
        "licenses": [],
        "images": coco_images,
        "annotations": coco_annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)],
    }
    # written last and renamed into place: an interrupted run leaves no annotations.json
    # that a later call could mistake for a finished dataset
    _write_atomic(path, json.dumps(coco, separators=(",", ":")).encode())
    return path
