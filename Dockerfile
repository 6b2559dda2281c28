# forwardpass serve in a container: `make image` (docs/deploy.md). The wheels come from a wheelhouse
# prepared on the host for the base's own Python (deploy/image/wheelhouse.sh), so nothing here needs
# a network; the first stage installs them into a virtual environment, the second copies only that.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG EXTRA=cpu
ARG WHEELHOUSE=build/wheelhouse-cpu
COPY ${WHEELHOUSE} /wheelhouse
# pip leaves the venv once it has installed: the server never installs anything at run time. The
# page's onnxruntime-web and /docs's Swagger UI, when make brought them (make web), go where the server
# looks first without a flag: ort/ and docs/swagger-ui/ in the installed page folder.
RUN python3 -m venv /opt/forwardpass \
    && /opt/forwardpass/bin/pip install --no-index --no-cache-dir --find-links /wheelhouse "forwardpass[${EXTRA}]" \
    && /opt/forwardpass/bin/pip uninstall --yes --quiet pip \
    && web="$(/opt/forwardpass/bin/python -c 'import forwardpass.web as web; print(web.FOLDER)')" \
    && if [ -d /wheelhouse/onnxruntime-web ]; then cp -r /wheelhouse/onnxruntime-web "$web/ort"; fi \
    && if [ -d /wheelhouse/swagger-ui ]; then cp -r /wheelhouse/swagger-ui "$web/docs/swagger-ui"; fi

FROM ${BASE}
COPY --from=build /opt/forwardpass /opt/forwardpass
# uid 1000, numeric in USER so that Kubernetes' runAsNonRoot can verify it; a base that already has
# a user 1000 (Ubuntu's CUDA images: ubuntu) keeps it.
RUN getent passwd 1000 >/dev/null \
    || useradd --uid 1000 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin forwardpass
USER 1000:1000
# onnxruntime 1.32 carries telemetry, which warns at start-up that it cannot keep a device ID where the
# user has no writable home; a server in a cluster, often with no route out, wants none of it.
ENV PATH=/opt/forwardpass/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /tmp
# HTTP/REST, gRPC, Prometheus metrics: Triton's ports.
EXPOSE 8000 8001 8002
STOPSIGNAL SIGTERM
# KServe's and Kubernetes' `args` are appended to this; the last of a repeated flag wins. --grace 8
# drains within Docker's default 10 s stop timeout (Kubernetes gives 30 s: the manifests pass their own).
# --no-page: the page hands out every model's weights; `--page` after the image name turns it back on.
ENTRYPOINT ["forwardpass", "serve", "--host", "0.0.0.0", "--model-repository", "/mnt/models", \
            "--metrics-port", "8002", "--metrics-host", "0.0.0.0", "--grace", "8", "--no-page"]
