"""detkit.ops imports nothing of the training stack: safe to use from any project."""

import subprocess
import sys

CODE = """
import sys, torch
import detkit.ops as ops
b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
s = torch.tensor([0.9, 0.8, 0.7]); c = torch.tensor([0, 0, 1]); d = torch.tensor([0.1, 0.2, 0.3])
ops.nms(b, s, 0.5); ops.batched_nms(b, s, c, 0.5)
ops.soft_nms(b, s); ops.batched_soft_nms(b, s, c)
ops.adaptive_nms(b, s, d, 0.5); ops.adaptive_soft_nms(b, s, d); ops.diou_nms(b, s, 0.5)
for config in ({"type": "nms"}, {"type": "soft_nms"}, {"type": "adaptive_nms"}, {"type": "diou_nms"}):
    ops.build_suppressor(config)(b, s, c, d)
ops.sigmoid_focal_loss(s, s); ops.generalized_box_iou_loss(b, b)
heavy = [m for m in ("albumentations", "pycocotools", "cv2", "click", "yaml", "detkit.models", "detkit.data")
         if m in sys.modules]
print(",".join(heavy))
"""


def test_ops_loads_no_training_stack():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
