#!/bin/sh
# What `make test-image` needs where no registry serves base images: Debian's Docker engine (started
# here when none answers), and a Debian base image made from Debian's own packages by debootstrap.
# Usage: test-base.sh IMAGE_NAME
set -eu
base=$1
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd (log: /tmp/forwardpass-dockerd.log)"
    nohup dockerd >/tmp/forwardpass-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" >/dev/null
    tar -C "$root" -c . | docker import - "$base" >/dev/null
fi
echo "base image $base: $(docker run --rm --network none --entrypoint python3 "$base" --version)"
