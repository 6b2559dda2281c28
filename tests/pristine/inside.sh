#!/bin/bash
# Inside make test-pristine's container (tests/pristine/run.sh), as root on a bare Debian: the host's
# registry settings into place, then what a new user does: install make, git and npm, clone, make
# test, make run (checked by routes.py, stopped with Ctrl-C). Prints each phase's time; exits non-zero
# when any phase fails, after trying the make run checks even if make test failed.
set -uo pipefail
# One compound command, read whole before it runs: an edit to this file meanwhile cannot change it.
{
    export DEBIAN_FRONTEND=noninteractive
    # The tests require every tool here: make test runs as root, so it installs them (tests/pristine/tools.sh).
    export FORWARDPASS_REQUIRE_TOOLS=${FORWARDPASS_REQUIRE_TOOLS:-1}
    times=() failed=()

    phase() {  # phase NAME COMMAND...: run it, print and keep its time
        local name=$1 t status
        shift
        echo "=== $name"
        t=$(date +%s)
        "$@"
        status=$?
        times+=("$name: $(($(date +%s) - t))s$([ "$status" = 0 ] || echo " (FAILED, exit $status)")")
        echo "phase ${times[-1]}"
        [ "$status" = 0 ] || failed+=("$name")
        return "$status"
    }

    host_settings() {
        # the host's files, dereferenced, over the container's (apt's sources are the host's alone); its
        # authorities also where update-ca-certificates keeps local ones, so that a trigger keeps them
        [ -d /run/host/etc/apt ] && rm -f /etc/apt/sources.list
        (cd /run/host && find . \( -type f -o -type l \) -print0) | while IFS= read -r -d '' file; do
            mkdir -p "$(dirname "/${file#./}")" && cp -L "/run/host/${file#./}" "/${file#./}" 2>/dev/null
        done
        if [ -f /run/host/etc/ssl/certs/ca-certificates.crt ]; then
            mkdir -p /usr/local/share/ca-certificates
            cp /run/host/etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/host-authorities.crt
        fi
        true
    }

    apt_install() {
        apt-get update -qq && apt-get install -y -qq make git npm >/dev/null
    }

    clone() {
        git config --global --add safe.directory '*' &&
            git clone --quiet --no-hardlinks /run/source.git /root/forwardpass &&
            git -C /root/forwardpass log -1 --format='%h %s'
    }

    make_test() {
        (cd /root/forwardpass && make test)
    }

    make_run() {
        cd /root/forwardpass && python3 /run/pristine/routes.py
    }

    echo "container: $(. /etc/os-release && echo "$PRETTY_NAME"), $(python3 --version), $(nproc) cores"
    [ -d /run/host ] && host_settings
    phase "apt-get install make git npm" apt_install &&
        phase "git clone" clone &&
        {
            phase "make test" make_test
            phase "make run checks" make_run
        }
    echo "=== phase times"
    printf '  %s\n' "${times[@]}"
    if [ "${#failed[@]}" != 0 ]; then
        echo "FAILED: ${failed[*]}"
        exit 1
    fi
    exit
}
