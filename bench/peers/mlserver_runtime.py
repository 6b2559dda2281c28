"""An MLServer runtime for an ONNX model: onnxruntime on one thread, input ``x`` in, output ``y`` out.

Written as an MLServer user would write a custom runtime (MLServer ships none for ONNX): the model
file comes from ``parameters.uri`` in model-settings.json, and tensors go through NumpyCodec.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    """Serves an ONNX model with one input ``x`` and one output ``y``."""

    async def load(self) -> bool:
        """Open the ONNX file in an InferenceSession (called once per inference worker)."""
        path = await get_model_uri(self.settings)
        options = ort.SessionOptions()
        # One thread per session: the benchmark compares servers, not onnxruntime's thread pool, and
        # MLServer's parallel workers each hold a session of their own.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run the model on the request's ``x`` and answer ``y``."""
        inputs = {request_input.name: request_input for request_input in payload.inputs}
        if "x" not in inputs:
            raise InferenceError(f"expected an input named 'x', got {sorted(inputs)}")
        x = self.decode(inputs["x"], default_codec=NumpyCodec)
        # onnxruntime takes float32 only; a client sending FP32 already has it, so this copies nothing.
        (y,) = self._session.run(["y"], {"x": np.asarray(x, dtype=np.float32)})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("y", y)],
        )
