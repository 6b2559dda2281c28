"""The CUDA provider against the oracle, TF32 off (our default) and on. Skipped, with the reason,
where onnxruntime-gpu or a GPU is missing."""

import numpy as np
import pytest

from forwardpass.builder.spec import Activation
from forwardpass.errors import ProviderError
from forwardpass.runtime import Runtime, cuda_offered
from forwardpass.tolerance import compare

from numerics import feed, model_bytes, random_input, random_spec, unfeed

pytestmark = pytest.mark.cuda
ACTS = (Activation("relu"), Activation("tanh"), Activation("sigmoid"))


def cuda_runtime(data: bytes, tf32: bool) -> Runtime:
    if not cuda_offered():
        pytest.skip("this onnxruntime has no CUDA provider: install onnxruntime-gpu in place of onnxruntime")
    try:
        return Runtime(data, provider="cuda", tf32=tf32)
    except ProviderError as exc:
        pytest.skip(f"no GPU answered: {exc}")


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize(
    ("dtype", "tf32", "mode"), [("float32", False, "float32"), ("float32", True, "tf32"), ("float64", False, "float64")]
)
def test_cuda_matches_the_oracle(layout, dtype, tf32, mode):
    rng = np.random.default_rng(0)
    spec = random_spec(rng, (3, 64, 64, 1), ACTS)
    runtime = cuda_runtime(model_bytes(spec, layout=layout, dtype=dtype), tf32)
    assert runtime.provider == "cuda"
    X = random_input(rng, 3, 65536, dtype)
    result = compare(spec, X.astype(np.float64), unfeed(runtime.predict(feed(X, layout)), layout), mode)
    print(f"cuda {layout} {dtype} tf32={tf32}: max abs error {result.max_abs:.3g}, worst {result.worst:.3g} of {mode}")
    assert result.ok, result
