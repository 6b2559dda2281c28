# make run: set up .venv and serve models/.   make test: set up, lint, and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INTEROP := $(VENV)/.interop
FP ?= $(PY) -m forwardpass
MODEL_REPO ?= models

.PHONY: run demo test lint models protos bench bench-tools clean image test-image web web-if-npm browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

run: $(STAMP) web-if-npm
	$(FP) serve --model-repository models

# onnxruntime-web for the page at / (14 MB, never committed): npm ci from web/package-lock.json,
# keeping its wasm backend and licence in web/ort/. make run does it when npm is there; without
# npm the page still shows the server's answers and says how to get it.
WEB := web/ort/.installed
$(WEB): $(STAMP) web/package.json web/package-lock.json
	$(FP) web-runtime --dir web/ort
	touch $(WEB)

web: $(WEB)

web-if-npm: $(STAMP)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory web \
		|| echo "onnxruntime-web not fetched: the page at / shows the server's answers only"; \
	else echo "npm not found: the page at / shows the server's answers only (make web with npm adds the in-browser run)"; fi

# The tools the tests use beyond Python, make and git (npm, node, curl, openssl, h2load, Debian's
# headless Chromium for the page's Playwright tests, libb64-0d for Triton's perf_analyzer), from
# Debian's packages: as root make installs the missing ones, elsewhere it says what to install and
# the tests that need one skip and say why (CI sets FORWARDPASS_REQUIRE_TOOLS=1: they fail there).
.PHONY: tools test-pristine
tools:
	@tests/pristine/tools.sh

browser:
	@tests/pristine/tools.sh chromium-headless-shell

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

test: tools $(STAMP) $(INTEROP) lint web-if-npm browser
	$(PY) -m pytest
	FORWARDPASS_TRITON_TESTS=1 $(PY) -m pytest tests/triton
	FORWARDPASS_KSERVE_TESTS=1 $(PY) -m pytest tests/kserve
	FORWARDPASS_DEPLOY_TESTS=1 $(PY) -m pytest tests/deploy

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

# The container image (docs/deploy.md): forwardpass:<version> and :latest on BASE. The wheels are
# downloaded here for BASE's own Python (deploy/image/wheelhouse.sh) and installed with --no-index,
# so the build reaches no network. GPU=1: onnxruntime-gpu on a CUDA base with Python, tagged -gpu.
IMAGE ?= forwardpass
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
ifeq ($(GPU),1)
BASE ?= forwardpass-cuda-base
IMAGE_EXTRA := gpu
IMAGE_TAG := -gpu
else
BASE ?= python:3.11-slim-bookworm
IMAGE_EXTRA := cpu
IMAGE_TAG :=
endif

image: $(STAMP) web-if-npm
	docker image inspect $(BASE) >/dev/null 2>&1 || $(if $(filter forwardpass-cuda-base,$(BASE)),\
		docker build --file deploy/image/cuda-base.Dockerfile --tag $(BASE) deploy/image,docker pull $(BASE))
	PY=$(PY) deploy/image/wheelhouse.sh $(BASE) $(IMAGE_EXTRA) build/wheelhouse-$(IMAGE_EXTRA)
	@# the page's onnxruntime-web (make web) travels beside the wheels; without it the page shows server answers
	if [ -f $(WEB) ]; then cp -r web/ort build/wheelhouse-$(IMAGE_EXTRA)/onnxruntime-web; fi
	docker build --build-arg BASE=$(BASE) --build-arg EXTRA=$(IMAGE_EXTRA) \
		--build-arg WHEELHOUSE=build/wheelhouse-$(IMAGE_EXTRA) \
		--tag $(IMAGE):$(VERSION)$(IMAGE_TAG) --tag $(IMAGE):latest$(IMAGE_TAG) .

# Build the image on a Debian base made here from Debian's packages (no registry serves base images
# here; Docker's engine is started when none answers) and check every route of it with tritonclient
# and with KServe's SDK. Both define the protobuf package `inference`: the KServe file runs in a
# pytest process of its own. Both run; either failing fails the target. Minutes: not part of `make test`.
test-image: $(STAMP)
	deploy/image/test-base.sh forwardpass-base:bookworm
	$(MAKE) image BASE=forwardpass-base:bookworm
	status=0; \
	FORWARDPASS_IMAGE_TESTS=1 FORWARDPASS_IMAGE=$(IMAGE):$(VERSION) $(PY) -m pytest -v tests/image || status=1; \
	FORWARDPASS_IMAGE_TESTS=1 FORWARDPASS_KSERVE_TESTS=1 FORWARDPASS_IMAGE=$(IMAGE):$(VERSION) \
		$(PY) -m pytest -v tests/image || status=1; \
	exit $$status

# The serving benchmark builds MLServer's and PyTriton's virtualenvs on first use (a minute each,
# under ~/.cache/forwardpass-peers), and one for Triton's perf_analyzer (tritonclient 2.41.0, which
# needs Debian's libb64-0d); it uses h2load from Debian's nghttp2-client when it can.
bench: $(STAMP) bench-tools
	$(PY) bench/local.py
	$(PY) bench/serve.py

bench-tools:
	@tests/pristine/tools.sh h2load libb64.so.0d

# make test on a bare Debian (debootstrap minbase with Python) in a container, from a clone of the
# committed HEAD, as root; then make run and its routes, and a Ctrl-C that must stop it. Needs Docker
# (started here when none answers); about 30 minutes. Uncommitted changes are not in the clone.
test-pristine:
	tests/pristine/run.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
