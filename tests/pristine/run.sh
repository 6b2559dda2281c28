#!/bin/bash
# make test-pristine: the README's two commands on a bare Debian. A container of the debootstrap
# minbase image with Python (deploy/image/test-base.sh) installs make, git and npm, clones this
# checkout's committed HEAD, runs `make test` as root, then `make run` and its routes, and stops it
# with Ctrl-C (tests/pristine/inside.sh, tests/pristine/routes.py). The container reaches the package
# registries only with this machine's settings, read here at run time and passed in: apt's sources
# and configuration, pip's configuration and every local folder or file it names, the PIP_* and
# NPM_CONFIG_* environment, npm's configuration, and the certificate authorities of /etc/ssl/certs.
# A Docker engine that cannot start is a failure.
set -euo pipefail
# One compound command, read whole before it runs: an edit to this file meanwhile cannot change it.
{
    here=$(cd "$(dirname "$0")" && pwd)
    repo=$(git -C "$here" rev-parse --show-toplevel)
    base=${PRISTINE_BASE:-forwardpass-base:bookworm}
    limit=${PRISTINE_TIMEOUT:-1800}  # seconds for everything in the container: under 30 minutes
    name=forwardpass-pristine-$$
    started=$(date +%s)

    seconds() { echo $(($(date +%s) - $1)); }

    t=$(date +%s)
    if ! "$repo/deploy/image/test-base.sh" "$base"; then
        echo "FAILED: no Docker engine or no base image $base (deploy/image/test-base.sh): make test-pristine needs both" >&2
        exit 1
    fi
    base_s=$(seconds "$t")
    echo "phase base image: ${base_s}s"

    # Configuration is mounted under /run/host and copied into place inside (so that a package that
    # writes there, as ca-certificates' trigger does, writes into the container's copy); folders that
    # a configuration names (wheels, an index, a constraints file) are mounted read-only where they are.
    mounts=() envs=() seen=" "
    copy_in() {  # copy_in HOST_PATH [CONTAINER_PATH]
        [ -e "$1" ] || return 0
        mounts+=(-v "$(realpath "$1"):/run/host${2:-$1}:ro")
    }
    mount_named() {  # every absolute path or file:// URL among the words of $1 that exists here
        local word path
        for word in $1; do
            path=${word#file://}
            path=${path%%,*}
            case $path in /etc/ssl/* | /etc/pki/* | /etc/apt/* | /etc/pip.conf | /etc/xdg/pip*) continue ;; /?*) ;; *) continue ;; esac
            [ -e "$path" ] || continue
            # a PEP 503 index (DIR/simple) links to its files beside it, in DIR: DIR goes in
            [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
            case $seen in *" $path "*) continue ;; esac
            seen="$seen$path "
            mounts+=(-v "$(realpath "$path"):$path:ro")
        done
    }

    copy_in /etc/apt/sources.list
    copy_in /etc/apt/sources.list.d
    copy_in /etc/apt/apt.conf.d
    copy_in /etc/apt/preferences.d
    copy_in /etc/apt/keyrings
    copy_in /etc/apt/trusted.gpg.d
    copy_in /etc/ssl/certs
    pip_configs=(/etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf")
    copy_in /etc/pip.conf
    copy_in /etc/xdg/pip
    copy_in "$HOME/.config/pip/pip.conf" /root/.config/pip/pip.conf
    copy_in "$HOME/.pip/pip.conf" /root/.pip/pip.conf
    if [ -n "${PIP_CONFIG_FILE:-}" ]; then
        pip_configs+=("$PIP_CONFIG_FILE")
        mount_named "$PIP_CONFIG_FILE"
    fi
    for config in "${pip_configs[@]}"; do
        [ -f "$config" ] && mount_named "$(sed -n 's/^[^#;=]*=//p' "$config")"
    done
    # npm reads its global configuration from PREFIX/etc/npmrc: /usr/etc/npmrc for a Node under /usr,
    # /etc/npmrc for Debian's npm. The host's goes to both.
    for npmrc in /usr/etc/npmrc /etc/npmrc; do
        if [ -f "$npmrc" ]; then
            copy_in "$npmrc" /usr/etc/npmrc
            copy_in "$npmrc" /etc/npmrc
            mount_named "$(sed -n 's/^[^#;=]*=//p' "$npmrc")"
            break
        fi
    done
    copy_in "$HOME/.npmrc" /root/.npmrc
    while IFS='=' read -r var value; do
        envs+=(-e "$var")
        mount_named "$value"
    done < <(env | grep -E '^(PIP|NPM_CONFIG)_[A-Za-z0-9_]*=' || true)
    if [ -n "${FORWARDPASS_REQUIRE_TOOLS+set}" ]; then envs+=(-e FORWARDPASS_REQUIRE_TOOLS); fi

    echo "commit $(git -C "$repo" rev-parse --short HEAD) (committed HEAD only$(git -C "$repo" diff --quiet HEAD || echo '; this checkout has uncommitted changes that the clone leaves out'))"
    echo "host settings passed in: $(printf '%s\n' "${mounts[@]}" | grep -v '^-v$' | cut -d: -f1 | tr '\n' ' ')${envs[*]:+; environment: $(printf '%s\n' "${envs[@]}" | grep -v '^-e$' | tr '\n' ' ')}"

    # In the background, so that a Ctrl-C or a TERM here (which bash would hold until a foreground
    # command ends) removes the container at once.
    trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
    trap 'echo "stopped: the container is removed" >&2; exit 130' INT TERM
    timeout --kill-after=60 "$limit" docker run --rm --init --network host --name "$name" \
        "${mounts[@]}" "${envs[@]}" \
        -v "$(git -C "$repo" rev-parse --absolute-git-dir):/run/source.git:ro" \
        -v "$here:/run/pristine:ro" \
        "$base" /bin/bash /run/pristine/inside.sh &
    status=0
    wait $! || status=$?
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        echo "FAILED: the container ran past ${limit}s" >&2
    fi
    echo "phase base image: ${base_s}s (host); total: $(seconds "$started")s"
    [ "$status" = 0 ] && echo "make test-pristine passed" || echo "make test-pristine FAILED (exit $status)" >&2
    exit "$status"
}
