#!/usr/bin/env bash
# A local base image for the Dockerfile, built without any container registry:
# a Debian bookworm root filesystem (debootstrap, minbase, with Python 3.11 and
# venv) imported into Docker.
#
#   sudo bash deploy/local-base.sh [TAG]          # TAG defaults to llmqfl-base:bookworm
#   docker build --build-arg BASE_IMAGE=llmqfl-base:bookworm ...
#
# Needs root, debootstrap and a Debian mirror (DEBIAN_MIRROR, default
# http://deb.debian.org/debian); DOCKER_HOST is honoured. The image has no
# entrypoint of its own; it is only ever a FROM.
set -euo pipefail

tag="${1:-llmqfl-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
docker="${DOCKER:-docker}"
for tool in debootstrap "$docker" tar; do
  command -v "$tool" >/dev/null || { echo "local-base.sh: '$tool' not found; install it first" >&2; exit 2; }
done
((EUID == 0)) || { echo "local-base.sh: debootstrap needs root; run it with sudo" >&2; exit 2; }

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -5 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# What an image needs no copy of: package lists, documentation, caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
tar --numeric-owner -C "$rootfs" -c . | "$docker" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "local-base.sh: $tag ($("$docker" image inspect -f '{{.Size}}' "$tag") bytes)"
