#!/usr/bin/env bash
# Make sure the base image the Dockerfiles build FROM exists.
# Online: pull the public python image (BASE_IMAGE). Where no registry is reachable (air-gapped hosts, these CI
# machines), build an equivalent Debian 12 + Python 3.11 image locally with debootstrap from the Debian mirror and tag
# it LOCAL_BASE_IMAGE. Prints the image to build FROM on stdout; logs go to stderr.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-python:3.11.14-slim-bookworm}
LOCAL_BASE_IMAGE=${LOCAL_BASE_IMAGE:-sentence-encoder-base:bookworm-py311}
log() { printf '[base-image] %s\n' "$*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

if have "$BASE_IMAGE"; then echo "$BASE_IMAGE"; exit 0; fi
if have "$LOCAL_BASE_IMAGE"; then echo "$LOCAL_BASE_IMAGE"; exit 0; fi
if [ "${OFFLINE:-auto}" != 1 ] && timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "$BASE_IMAGE"; exit 0
fi

log "cannot pull $BASE_IMAGE; building $LOCAL_BASE_IMAGE with debootstrap (about a minute)"
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null
# The same trimming the official slim images do: no apt lists, docs or caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$LOCAL_BASE_IMAGE" >/dev/null
log "built $LOCAL_BASE_IMAGE"
echo "$LOCAL_BASE_IMAGE"
