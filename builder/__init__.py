"""The network description, its ONNX graph, its read-back, and the NumPy oracle.

`forwardpass.builder.spec` describes a network; `graph` turns it into ONNX; `oracle` computes the
slides' equations from the same description, with no ONNX code.
"""
