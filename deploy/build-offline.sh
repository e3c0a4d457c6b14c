#!/usr/bin/env bash
# Build the app image with no network inside the build: the wheels of every
# dependency are fetched on this host first (into deploy/wheels), and the
# Dockerfile installs from them only (pip install --no-index).
#
#   bash deploy/build-offline.sh [--base IMAGE] [--tag TAG] [--keep-wheels]
#
# IMAGE is the base (default python:3.11-slim; without a registry, the image
# deploy/local-base.sh builds). TAG defaults to llmqfl:latest, the image
# docker-compose.yml uses. The host's Python must match the base's (3.11 on
# Linux x86_64, the same patch release), since pip picks wheels for the host.
# DOCKER_HOST is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

base="python:3.11-slim"
tag="llmqfl:latest"
keep=0
while (($#)); do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --keep-wheels) keep=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-offline.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
python="${PYTHON:-python3}"
docker="${DOCKER:-docker}"
# pip picks each wheel for the Python that runs it, down to the patch level (a package may
# need >= 3.11.5), so the host's interpreter must be the base image's.
version='import platform; print(platform.python_version())'
wanted="$("$docker" run --rm --network none --entrypoint python3 "$base" -c "$version")"
have="$("$python" -c "$version")"
[[ "$have" == "$wanted" ]] || {
  echo "build-offline.sh: PYTHON=$python is Python $have, the base image $base has $wanted;" \
    "set PYTHON to a Python $wanted with pip (the wheels are picked for it)" >&2
  exit 2
}

# The wheels: torch (the CPU build, listed first as in the README's set-up) and everything
# the project needs, built as wheels where the index has only sources.
"$python" -m pip wheel --quiet --wheel-dir deploy/wheels "setuptools>=68" torch==2.13.0 .
rm -f deploy/wheels/llmqfl-*.whl  # the project itself is installed from its sources
echo "build-offline.sh: $(ls deploy/wheels/*.whl | wc -l) wheels, $(du -sh deploy/wheels | cut -f1)"
log="$(mktemp)"
"$docker" build --network none --build-arg "BASE_IMAGE=$base" -t "$tag" . >"$log" 2>&1 \
  || { tail -20 "$log" >&2; exit 1; }
rm -f "$log"
((keep)) || rm -f deploy/wheels/*.whl
echo "build-offline.sh: $tag ($("$docker" image inspect -f '{{.Size}}' "$tag") bytes), built with --network none"
