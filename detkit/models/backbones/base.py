"""What every backbone and neck declares: its output levels, each with channels and stride.

Shorthand: C<k> is a backbone feature map of stride 2**k (C2: stride 4 ... C5: stride 32);
P<k> a neck's output of stride 2**k. Heads consume these declarations (``out_shapes``),
so any neck fits any backbone and any head any neck.
"""

from __future__ import annotations

import math

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import Tensor, nn

from detkit.checkpoints import load_weights


@dataclass(frozen=True)
class ShapeSpec:
    """A feature map's channels and stride (input pixels per feature cell)."""

    channels: int
    stride: int


class FeatureExtractor(nn.Module):
    """A backbone or neck: ``forward`` returns ``OrderedDict[level name, Tensor[N, C, H, W]]``
    in increasing stride, matching ``out_shapes``."""

    out_shapes: "OrderedDict[str, ShapeSpec]"

    def forward(self, x) -> "OrderedDict[str, Tensor]":  # pragma: no cover - interface
        raise NotImplementedError


def read_levels(backbone: FeatureExtractor, neck: FeatureExtractor | None, images: Tensor,
                levels: list[str]) -> list[Tensor]:
    """The feature maps ``levels`` of ``images``: the backbone's, through the neck if there is one."""
    features = backbone(images)
    if neck is not None:
        features = neck(features)
    return [features[lvl] for lvl in levels]


def level_name(prefix: str, stride: int) -> str:
    """"C" or "P" followed by log2(stride): level_name("C", 16) == "C4"."""
    return f"{prefix}{stride.bit_length() - 1}"


class FrozenModules:
    """Mixin: parts listed in ``self.frozen`` (submodule names, dotted allowed) get no gradients
    and stay in eval mode (their BatchNorm statistics fixed) whatever ``train()`` is called with."""

    frozen: list[str]

    def freeze(self, *names: str) -> None:
        self.frozen = [*getattr(self, "frozen", []), *names]
        for name in names:
            for p in self.get_submodule(name).parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in getattr(self, "frozen", []):
            self.get_submodule(name).eval()
        return self


def load_pretrained(weights: str | Path, enum_class, *, what: str) -> dict[str, Tensor]:
    """A state dict from a torchvision weight enum member name ("DEFAULT", "IMAGENET1K_V1") or a
    local file (loaded with ``weights_only=True``).

    Raises:
        ValueError: an unknown enum name or a missing file.
        RuntimeError: the weights must be downloaded and cannot be (no network): the message
            says from where, and that a local file path works instead.
    """
    path = Path(str(weights))
    if path.suffix in (".pth", ".pt", ".bin") or path.exists():
        state = load_weights(path, what)
        return state.get("model", state) if isinstance(state, dict) else state
    try:
        member = enum_class[str(weights)] if str(weights) != "DEFAULT" else enum_class.DEFAULT
    except KeyError:
        names = ", ".join(["DEFAULT", *enum_class.__members__])
        raise ValueError(f"{what}: unknown weights {weights!r} (known: {names}, or a .pth file path)") from None
    try:
        return member.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            f"{what}: cannot download {enum_class.__name__}.{member.name} from {member.url} ({error}). "
            "Without network access, download that file elsewhere and pass its path as the weights."
        ) from None


GN_GROUPS = 32  # He et al.'s (and Wu & He's) groups per GroupNorm


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``GN_GROUPS`` groups, or the largest divisor of ``channels`` below it
    (EfficientNet's 16, 24 and 40 channels: 16, 8, 8 groups)."""
    return nn.GroupNorm(math.gcd(GN_GROUPS, channels), channels)


LAYER_NORMS = (False, True, "bn", "gn")  # of a neck's or head's convs: none, BatchNorm (true or "bn"), GroupNorm


def checked_layer_norm(norm: bool | str, where: str) -> bool | str:
    """A neck's or head's ``norm`` (false, true or "bn", "gn"), refused with ``where`` otherwise."""
    if norm not in LAYER_NORMS:
        raise ValueError(f"{where} must be false, true (or 'bn') or 'gn', got {norm!r}")
    return norm


def layer_norm(norm: bool | str, channels: int, **batch_norm) -> nn.Module:
    """The normalisation after a neck's or head's conv (``norm`` true: ``checked_layer_norm``):
    GroupNorm for "gn", else BatchNorm with ``batch_norm``'s arguments (eps, momentum)."""
    return group_norm(channels) if norm == "gn" else nn.BatchNorm2d(channels, **batch_norm)


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """The normalisation of a backbone: "frozen_bn" (fixed statistics and affine, the usual
    choice with pretrained weights and small batches), "bn" (trainable BatchNorm) or "gn"
    (GroupNorm: independent of the batch, He et al.'s recipe for training from scratch)."""
    from torchvision.ops import FrozenBatchNorm2d

    if name == "frozen_bn":
        return FrozenBatchNorm2d
    if name == "bn":
        return nn.BatchNorm2d
    if name == "gn":
        return group_norm
    raise ValueError(f"norm must be 'frozen_bn', 'bn' or 'gn', got {name!r}")


def no_pretrained_group_norm(norm: str, weights: str | None, what: str) -> None:
    """ImageNet weights carry BatchNorm statistics that GroupNorm cannot use: refuse the pair."""
    if norm == "gn" and weights is not None:
        raise ValueError(f"{what}: norm 'gn' trains from scratch (He et al.); pretrained weights ({weights!r}) "
                         "hold BatchNorm statistics: use norm 'frozen_bn' or 'bn' with them, or weights: null")
