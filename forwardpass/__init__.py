"""forwardpass: the small fully-connected networks of a deep-learning course as ONNX models.

The subpackages are `forwardpass.builder` (network description, ONNX graph, NumPy oracle),
`forwardpass.server` and `forwardpass.protos`; `forwardpass.runtime` runs a model in onnxruntime.
"""

__version__ = "0.1.0"
