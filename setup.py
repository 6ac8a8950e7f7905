"""detkit: a modular PyTorch object-detection toolkit.

One compiled extension, ``detkit.ops._C`` (the suppressors' inner loops), built from
plain C++17 against the Python C API only: no torch or numpy headers, so it builds in
seconds with the system compiler and needs no build-time torch.
"""

import sys

from setuptools import Extension, find_packages, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/std:c++17", "/fp:precise"]
else:
    # -ffp-contract=off: no fused multiply-add, so IoU is bit-identical to torchvision's kernel
    compile_args = ["-O3", "-std=c++17", "-ffp-contract=off", "-fvisibility=hidden"]

setup(
    name="detkit",
    version="0.1.0",
    description="A modular PyTorch object-detection toolkit: detectors, suppressors and COCO evaluation.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["detkit", "detkit.*"]),
    package_data={"detkit": ["py.typed"]},
    ext_modules=[
        Extension(
            "detkit.ops._C",
            sources=["detkit/ops/csrc/suppress.cpp"],
            extra_compile_args=compile_args,
            language="c++",
        )
    ],
    install_requires=[
        "torch>=2.1,<2.15",
        "torchvision>=0.16,<0.30",
        "numpy>=1.24",
        "pycocotools>=2.0.7",
        # a C++ COCOeval: one of the peers detkit's own evaluation is held to (backend="faster-coco-eval")
        "faster-coco-eval>=1.6",
        "albumentations>=2.0,<3",
        "opencv-python-headless>=4.8",
        "pillow>=10.0",
        "matplotlib>=3.7",
        "click>=8.1",
        "pyyaml>=6.0",
        "tqdm>=4.64",
    ],
    extras_require={
        # ONNX export (detkit.export): onnx to write graphs, onnxruntime to run and check them
        "export": ["onnx>=1.16", "onnxruntime>=1.18"],
        # tidecv: the peer of the error analysis (detkit.evaluation.errors), for its tests only;
        # onnx and onnxruntime: the export's tests
        "test": ["pytest>=7.4", "hypothesis>=6.80", "ensemble-boxes>=1.0.9", "tidecv>=1.0.1", "onnx>=1.16",
                 "onnxruntime>=1.18"],
    },
    entry_points={"console_scripts": ["detkit=detkit.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C++",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "License :: OSI Approved :: Apache Software License",
    ],
)
