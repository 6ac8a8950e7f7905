"""detkit: a modular PyTorch object-detection toolkit.

Subpackages are imported on demand: ``import detkit.ops`` loads torch,
torchvision and (on first use of a CPU suppressor) numba, and nothing else.
"""

__version__ = "0.1.0"
