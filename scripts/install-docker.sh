#!/usr/bin/env bash
# Install and start a Docker engine with Compose v2 on a Debian 12/13 machine that has no engine.
# Idempotent: does nothing that is already done. Needs root (CI and the dev machines run as root).
# Why not get.docker.com: only Debian's own mirror is reachable from these machines.
set -euo pipefail

log() { printf '[install-docker] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

engine_answers() { docker info >/dev/null 2>&1; }

# Elsewhere, say what is needed instead of failing on a missing apt-get.
if ! command -v apt-get >/dev/null 2>&1 || [ ! -f /etc/debian_version ]; then
  if ! command -v docker >/dev/null 2>&1; then
    log "Docker is not installed. Install Docker Engine (or Docker Desktop) with Compose v2:"
  elif ! engine_answers; then
    log "docker is installed but its engine does not answer (docker info): start it, or check your access to it:"
  else
    log "Compose v2 is missing (docker compose version): install the docker-compose-plugin package:"
  fi
  log "  https://docs.docker.com/engine/install/ . This script installs them only on Debian 12/13."
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io and debootstrap from Debian's mirror"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap iptables ca-certificates >/dev/null
fi
command -v debootstrap >/dev/null 2>&1 || \
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends debootstrap >/dev/null

# Compose v2. Debian 13 packages it; Debian 12 only has v1, but trixie's static binary runs on bookworm.
if ! docker compose version >/dev/null 2>&1; then
  if grep -q '^13' /etc/debian_version; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null
  else
    log "fetching Compose v2 from Debian 13 (trixie) for this Debian 12 host"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d)
    mkdir -p "$tmp/sources" "$tmp/lists/partial" "$tmp/debs"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" >"$tmp/sources/trixie.sources"
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$tmp/sources" -o "Dir::State::Lists=$tmp/lists")
    $SUDO apt-get "${apt_opts[@]}" update -qq
    (cd "$tmp/debs" && $SUDO apt-get "${apt_opts[@]}" download docker-compose >/dev/null)
    $SUDO dpkg -i --force-depends "$tmp"/debs/docker-compose_*.deb >/dev/null
    rm -rf "$tmp"
  fi
fi

if ! engine_answers; then
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    log "starting dockerd in the background (log: /var/log/dockerd.log)"
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
  engine_answers || { log "dockerd did not answer in 60 s; see /var/log/dockerd.log"; exit 1; }
fi
log "engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null || echo 'no compose')"
