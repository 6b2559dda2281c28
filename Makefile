# make run: set up .venv and serve models/.   make test: set up, lint, and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INTEROP := $(VENV)/.interop
FP ?= $(PY) -m forwardpass
MODEL_REPO ?= models

.PHONY: run demo test lint models protos bench bench-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

run: $(STAMP)
	$(FP) serve --model-repository models

demo: $(STAMP)
	$(FP) demo

# tritonclient, kserve and our stubs all define the protobuf package `inference`; one process can
# hold only one, so the tritonclient tests and the kserve tests each run in a pytest process of their own.
# The other runtimes and trainers the interop tests use: the interop extra (openvino, tract,
# scikit-learn, torch, skl2onnx) and onnxruntime-node, whose install script would fetch CUDA
# binaries from a host this machine cannot reach: the CPU build inside the package is enough.
$(INTEROP): $(STAMP) interop/package.json interop/package-lock.json
	$(PY) -m pip install --quiet -e '.[cpu,test,interop]'
	ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefix interop --no-audit --no-fund --loglevel=error
	touch $(INTEROP)

test: $(STAMP) $(INTEROP) lint
	$(PY) -m pytest
	FORWARDPASS_TRITON_TESTS=1 $(PY) -m pytest tests/triton
	FORWARDPASS_KSERVE_TESTS=1 $(PY) -m pytest tests/kserve

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Rebuild the committed models from their committed weights (never from a seed: NumPy does not
# promise the same random stream across versions). tests/test_models.py runs this into a temporary
# MODEL_REPO and checks the bytes equal what is committed.
models: $(STAMP)
	$(FP) build --weights models/mlp_3_4_1/1/weights.npz --activations relu,sigmoid \
		--name mlp_3_4_1 --repository $(MODEL_REPO) --version 1 --force
	$(FP) build --weights models/mlp_3_4_1_sigmoid/1/weights.npz --activations sigmoid,sigmoid \
		--name mlp_3_4_1_sigmoid --repository $(MODEL_REPO) --version 1 --force

# Regenerate protos/*_pb2*.py from the .proto files (grpcio-tools 1.81.x, from the test extra).
protos: $(STAMP)
	$(PY) protos/generate.py

# The serving benchmark builds MLServer's and PyTriton's virtualenvs on first use (a minute each,
# under ~/.cache/forwardpass-peers) and uses h2load from Debian's nghttp2-client when it can.
bench: $(STAMP) bench-tools
	$(PY) bench/local.py
	$(PY) bench/serve.py

bench-tools:
	@command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client) \
		|| echo "h2load not installed (apt-get install nghttp2-client): its cells are left out"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
