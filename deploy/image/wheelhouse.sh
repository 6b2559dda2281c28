#!/bin/sh
# Download, on this machine, every wheel the image needs, for the Python, CPU and C library of the
# base image itself (asked of the base, not assumed), so that `docker build` installs with
# --no-index and needs no network inside the container, as air-gapped build farms do.
# Usage: wheelhouse.sh BASE EXTRA OUT     (EXTRA: cpu or gpu; OUT: a folder, emptied first)
set -eu
base=$1 extra=$2 out=$3
py=${PY:-python3}

# "3.11 x86_64 2.36": the base's Python version, machine and glibc (manylinux wheels name the latter)
set -- $(docker run --rm --network none --entrypoint python3 "$base" -c \
    'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1])')
pyver=$1 machine=$2 glibc=$(echo "$3" | tr . _)

rm -rf "$out"
mkdir -p "$out"
"$py" -m pip wheel --quiet --no-deps --wheel-dir "$out" .
version=$(cd "$out" && ls forwardpass-*.whl | sed 's/^forwardpass-\([^-]*\)-.*/\1/')
# A manylinux_2_M wheel runs on glibc 2.N for every M <= N, but pip takes only the platforms it is
# given: name them all. --only-binary, because nothing can be compiled here for another Python.
minor=${glibc#2_}
platforms=$(seq 5 "$minor" | sed "s/.*/--platform manylinux_2_&_$machine/")
"$py" -m pip download --quiet --dest "$out" --find-links "$out" --only-binary=:all: \
    --python-version "$pyver" $platforms "forwardpass[$extra]==$version"
echo "wheelhouse $out: $(ls "$out" | wc -l) wheels for Python $pyver on $machine, glibc $3"
