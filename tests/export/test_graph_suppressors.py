"""The graph suppressors equal detkit.ops' compiled ones, eagerly and exported to onnxruntime."""

import io

import numpy as np
import pytest
import torch

from detkit.export import graph_suppressors as g
from detkit.ops import Suppressor

CONFIGS = [
    {"type": "nms", "iou_threshold": 0.5},
    {"type": "nms", "iou_threshold": 0.3},
    {"type": "diou_nms", "iou_threshold": 0.5},
    {"type": "adaptive_nms", "iou_threshold": 0.5},
    {"type": "soft_nms", "method": "gaussian", "sigma": 0.5},
    {"type": "soft_nms", "method": "linear", "iou_threshold": 0.3},
    {"type": "adaptive_nms", "iou_threshold": 0.5, "method": "linear"},
    {"type": "adaptive_nms", "iou_threshold": 0.5, "method": "gaussian"},
]


def candidates(seed: int, n: int, classes: int = 3):
    """Clustered boxes (so they overlap), some scores tied, densities around N_t."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 6), 2, generator=gen) * 200
    c = centres[torch.randint(len(centres), (n,), generator=gen)] + torch.randn(n, 2, generator=gen) * 6
    wh = 20 + torch.rand(n, 2, generator=gen) * 30
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    scores = (torch.rand(n, generator=gen) * 20).round() / 20  # ties
    labels = torch.randint(classes, (n,), generator=gen)
    densities = torch.rand(n, generator=gen) * 0.6 + 0.2
    return boxes, scores, labels, densities


def graph_run(config, boxes, scores, labels, densities):
    """The graph suppressor of a config, eagerly: (keep, final scores in the scores' dtype)."""
    return g.graph_suppress(suppressor_of(config), boxes, scores, labels, densities)


def suppressor_of(config):
    return Suppressor(config["type"], {k: v for k, v in config.items() if k != "type"})


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("seed", range(4))
def test_equal_to_the_compiled_suppressors(config, seed):
    boxes, scores, labels, densities = candidates(seed, 120)
    suppressor = suppressor_of(config)
    want_keep, want_scores = suppressor(boxes, scores, labels, densities)
    keep, final = graph_run(config, boxes, scores, labels, densities)
    assert keep.tolist() == want_keep.tolist()
    torch.testing.assert_close(final, want_scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_a_limit_gives_the_first_boxes_of_the_unlimited_order(config):
    """With ``limit`` the loop stops early (a detector keeps only its cap): the result is the
    first ``limit`` of the compiled suppressor's, also where the limit falls among tied scores
    (the candidates' scores are multiples of 0.05)."""
    suppressor = suppressor_of(config)
    for seed in range(3):
        boxes, scores, labels, densities = candidates(seed, 150)
        want_keep, want_scores = suppressor(boxes, scores, labels, densities)
        for limit in (1, 7, 30, len(want_keep) - 1, 1000):
            keep, final = g.graph_suppress(suppressor, boxes, scores, labels, densities, limit=limit)
            assert keep.tolist() == want_keep[:limit].tolist()
            torch.testing.assert_close(final, want_scores[:limit], rtol=0, atol=1e-12)


def test_no_candidates_and_one_candidate():
    for n in (0, 1):
        boxes, scores, labels, densities = candidates(0, n)
        for config in CONFIGS:
            keep, _ = graph_run(config, boxes[:n], scores[:n], labels[:n], densities[:n])
            assert keep.tolist() == list(range(n))


class Wrapped(torch.nn.Module):
    def __init__(self, config, limit=0):
        super().__init__()
        self.config, self.limit = config, limit

    def forward(self, boxes, scores, labels, densities):
        return g.graph_suppress(suppressor_of(self.config), boxes, scores, labels, densities, limit=self.limit)


@pytest.mark.parametrize("limit", [0, 25])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_exported_to_onnx_they_give_the_same_boxes_for_any_count(config, limit):
    ort = pytest.importorskip("onnxruntime")
    boxes, scores, labels, densities = candidates(9, 40)
    f = io.BytesIO()
    names = ["boxes", "scores", "labels", "densities"]
    torch.onnx.export(Wrapped(config, limit), (boxes, scores, labels, densities), f, dynamo=False, input_names=names,
                      output_names=["keep", "final"], dynamic_axes={name: {0: "n"} for name in names}, opset_version=17)
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    suppressor = suppressor_of(config)
    for seed, n in ((1, 7), (2, 60), (3, 300)):  # none of them the traced count
        boxes, scores, labels, densities = candidates(seed, n)
        feed = {"boxes": boxes, "scores": scores, "labels": labels, "densities": densities}
        wanted = {i.name for i in session.get_inputs()}  # the exporter drops an input it does not read
        keep, final = session.run(None, {k: v.numpy() for k, v in feed.items() if k in wanted})
        want_keep, want_scores = suppressor(boxes, scores, labels, densities)
        if limit:
            want_keep, want_scores = want_keep[:limit], want_scores[:limit]
        assert keep.tolist() == want_keep.tolist()
        np.testing.assert_allclose(final, want_scores.numpy(), rtol=0, atol=1e-7)


def test_none_is_refused_with_a_reason():
    boxes, scores, labels, densities = candidates(0, 5)
    with pytest.raises(ValueError, match="'none' cannot be exported"):
        g.graph_suppress(Suppressor("none", {}), boxes, scores, labels, densities)
