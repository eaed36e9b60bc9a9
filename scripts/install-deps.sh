#!/usr/bin/env bash
# Installs the Debian packages kvm-warden's tests and demo use, only those missing (idempotent);
# with the argument `image`, also the container tools `make image` uses.
# Needs root (as on the lab and CI machines). Nothing is started here: tests and the demo start
# the daemons they need and stop exactly those.
set -euo pipefail
PKGS=(
  pacemaker pacemaker-cli-utils corosync pcs resource-agents fence-agents
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc
  qemu-system-x86 qemu-utils iproute2 procps
  python3 python3-venv python3-dev make
  prometheus prometheus-alertmanager chromium chromium-driver novnc zsh
)
# `install-deps.sh image`: also what building the container image needs (make image).
if [ "${1:-}" = "image" ]; then
  PKGS+=(podman buildah debootstrap fuse-overlayfs)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} Debian packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root (or install them) first" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's pacemaker/corosync/libvirt packages try to start services via systemd; on machines
# without systemd as PID 1 nothing starts, which is what we want: the tests start their own.
echo "install-deps: done"
