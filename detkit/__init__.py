"""detkit: a modular PyTorch object-detection toolkit.

Subpackages are imported on demand: ``import detkit.ops`` loads torch, torchvision,
numpy and the compiled suppressors (``detkit.ops._C``, built from ``ops/csrc/suppress.cpp``
by setup.py), and nothing else.
"""

__version__ = "0.1.0"
