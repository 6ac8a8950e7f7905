"""Exporting detkit's detectors to ONNX with their pre- and post-processing inside the graph.

``graph_suppressors``: every suppressor of ``detkit.ops`` as a TorchScript loop that exports
to an ONNX ``Loop``, exact to its compiled twin. onnx and onnxruntime are needed only to
export and run graphs (``pip install -e ".[export]"``); importing this package needs torch only.
"""
