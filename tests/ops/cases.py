"""Random box sets for the suppressor tests."""

import torch


def random_boxes(n: int, seed: int, *, canvas: float = 1000.0, max_side: float = 100.0, dtype=torch.float32):
    """n boxes with corners in [-canvas/10, canvas), sides in [0, max_side) (some zero-area),
    and distinct scores (a random permutation, so there are no ties)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * canvas * 1.1 - canvas * 0.1
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_side
    wh[torch.rand(n, generator=g) < 0.02] = 0  # zero-area boxes
    wh[torch.rand(n, generator=g) < 0.02, 0] = 0  # zero-width boxes
    boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
    scores = (torch.randperm(n, generator=g).to(torch.float64) + 1) / (n + 1)
    return boxes, scores.to(dtype)


def clustered_boxes(n: int, seed: int, *, objects: int = 50, canvas: float = 1000.0, dtype=torch.float32):
    """Detector-like boxes: n jittered copies of a few object boxes, scores without ties."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=g, dtype=torch.float64) * canvas
    sizes = 10 + torch.rand(objects, 2, generator=g, dtype=torch.float64) * 190
    which = torch.randint(0, objects, (n,), generator=g)
    jitter = 1 + 0.15 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    c = centres[which] + sizes[which] * 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    wh = sizes[which] * jitter[:, 2:].abs()
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=1).to(dtype)
    scores = (torch.randperm(n, generator=g).to(torch.float64) + 1) / (n + 1)
    return boxes, scores.to(dtype)
