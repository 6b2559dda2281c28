# make run: set up .venv-run and serve models/.   make test: set up .venv, lint, and run the tests.
PYTHON ?= python3
# Three venvs. .venv-run: only what `pip install 'forwardpass[cpu]'` gives a user, as pip resolves it;
# make run serves from it, and so do the tests' servers. .venv: the test extras (clients, linters,
# the browser driver, other runtimes), editable. .venv-lowest: the lowest versions pyproject.toml
# allows, whose server runs the server tests once in make test.
RUN_VENV := .venv-run
RUN_STAMP := $(RUN_VENV)/.installed
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
INTEROP := $(VENV)/.interop
LOWEST_VENV := .venv-lowest
LOWEST_STAMP := $(LOWEST_VENV)/.installed
FP ?= $(PY) -m forwardpass
MODEL_REPO ?= models
# What the installed package is built from: a change reinstalls it (non-editable, as users get it).
PACKAGE_FILES := pyproject.toml $(wildcard forwardpass/*.py builder/*.py server/*.py protos/*.py protos/*.proto web/*.* web/docs/*.*)

.PHONY: run demo test lint models protos bench bench-tools clean image test-image pod-limits web web-if-npm browser

$(RUN_STAMP): $(PACKAGE_FILES)
	test -x $(RUN_VENV)/bin/python || $(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy only-if-needed '.[cpu]'
	touch $@

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

# uv resolves the lowest direct versions (pip cannot), from PyPI, trusting the system's CA store as
# pip does (--native-tls: uv's own bundle lacks a CA that a proxy in between may sign with).
$(LOWEST_STAMP): $(PACKAGE_FILES) $(STAMP)
	rm -rf $(LOWEST_VENV)
	$(VENV)/bin/uv venv --quiet --python $(PYTHON) $(LOWEST_VENV)
	$(VENV)/bin/uv pip install --quiet --native-tls --python $(LOWEST_VENV)/bin/python --resolution lowest-direct '.[cpu]'
	touch $@

# Poll mode, rescanning every second: a model built into models/ while this serves is served within about 2 s.
run: $(RUN_STAMP) web-if-npm
	$(RUN_VENV)/bin/forwardpass serve --model-repository $(MODEL_REPO) --model-control-mode poll \
		--repository-poll-secs 1 $(if $(wildcard $(WEB)),--ort-web-dir web/ort --swagger-ui-dir web/docs/swagger-ui)

# onnxruntime-web for the page at / (14 MB, never committed): npm ci from web/package-lock.json,
# keeping its wasm backend and licence in web/ort/; and Swagger UI for /docs (swagger-ui-dist, 1.5 MB)
# from web/docs/package-lock.json into web/docs/swagger-ui/. make run does it when npm is there;
# without npm the page still shows the server's answers, /docs links the document, and both say how.
WEB := web/ort/.installed
SWAGGER_UI := web/docs/swagger-ui/.installed
$(WEB): web/package.json web/package-lock.json web/docs/package.json web/docs/package-lock.json | $(RUN_STAMP)
	$(RUN_VENV)/bin/forwardpass web-runtime --dir web/ort --swagger-ui-dir web/docs/swagger-ui
	touch $(WEB) $(SWAGGER_UI)

web: $(WEB)

web-if-npm: $(RUN_STAMP)
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

# The servers the tests start come from .venv-run (FORWARDPASS_SERVER); the server tests run once
# more against the lowest versions' server.
SERVER_TESTS := tests/test_server.py tests/test_http.py tests/test_http_lifecycle.py tests/test_http_limits.py \
	tests/test_server_lifecycle.py tests/test_page.py tests/test_security.py tests/test_model_control.py \
	tests/test_batching.py tests/test_workers.py tests/test_model_load.py tests/test_dependency_sets.py \
	tests/test_cors.py tests/test_access_log.py tests/test_openapi.py
RUN_SERVER := FORWARDPASS_SERVER=$(abspath $(RUN_VENV))/bin/forwardpass
test: tools $(STAMP) $(INTEROP) $(RUN_STAMP) $(LOWEST_STAMP) lint web-if-npm
	$(RUN_SERVER) $(PY) -m pytest
	FORWARDPASS_SERVER=$(abspath $(LOWEST_VENV))/bin/forwardpass FORWARDPASS_LOWEST=1 $(PY) -m pytest $(SERVER_TESTS)
	$(RUN_SERVER) FORWARDPASS_TRITON_TESTS=1 $(PY) -m pytest tests/triton
	$(RUN_SERVER) FORWARDPASS_KSERVE_TESTS=1 $(PY) -m pytest tests/kserve
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
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' forwardpass/__init__.py)
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
	@# the page's onnxruntime-web and /docs's Swagger UI (make web) travel beside the wheels; without them the
	@# page shows server answers and /docs links the document
	if [ -f $(WEB) ]; then cp -r web/ort build/wheelhouse-$(IMAGE_EXTRA)/onnxruntime-web; fi
	if [ -f $(SWAGGER_UI) ]; then cp -r web/docs/swagger-ui build/wheelhouse-$(IMAGE_EXTRA)/swagger-ui; fi
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

# The image as the Kubernetes manifests run it (their memory and CPU limits, their args) while every
# attack of docs/reliability.md is thrown at it and a valid client calls 50 times a second, for 3
# minutes: no OOM kill, no worker restart, live and ready within 1 s, 99.9% of valid calls OK, or it
# fails. Figures in bench/results/pod-limits.json; about 8 minutes with the image's build.
pod-limits: $(STAMP)
	deploy/image/test-base.sh forwardpass-base:bookworm
	$(MAKE) image BASE=forwardpass-base:bookworm
	$(PY) tests/pod/limits.py --image $(IMAGE):$(VERSION)

# The serving benchmark builds MLServer's and PyTriton's virtualenvs on first use (a minute each,
# under ~/.cache/forwardpass-peers), and one for Triton's perf_analyzer (tritonclient 2.41.0, which
# needs Debian's libb64-0d); it uses h2load from Debian's nghttp2-client when it can.
# PEERS=no leaves MLServer, KServe and PyTriton out (bench/serve.py took 14-16 minutes so, against
# about 19 with them; make bench with them 23-24 minutes in all, on a 2-core machine).
bench: $(STAMP) bench-tools
	$(PY) bench/local.py
	$(PY) bench/handler_costs.py
	$(PY) bench/request_profile.py
	$(PY) bench/serve.py $(if $(filter no,$(PEERS)),--no-peers)

bench-tools:
	@tests/pristine/tools.sh h2load libb64.so.0d

# make test on a bare Debian (debootstrap minbase with Python) in a container, from a clone of the
# committed HEAD, as root; then make run and its routes, and a Ctrl-C that must stop it. Needs Docker
# (started here when none answers); about 30 minutes. Uncommitted changes are not in the clone.
test-pristine:
	tests/pristine/run.sh

clean:
	rm -rf $(VENV) $(RUN_VENV) $(LOWEST_VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
