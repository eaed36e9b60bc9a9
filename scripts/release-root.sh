#!/usr/bin/env bash
# A clean root of a Debian release, made once with debootstrap from the mirror apt uses here
# and cached under build/ (idempotent); prints its path.
#   scripts/release-root.sh 12|13 base    minbase: what apt installs a package into
#   scripts/release-root.sh 12|13 build   + what build-deb.sh needs to build the package there
#                                            (python3-venv, headers, gcc, libvirt-dev)
#   scripts/release-root.sh 13 lab        + the cluster stack of a lab node on that release
#                                            (Pacemaker, corosync, pcs, libvirt, QEMU, ...):
#                                            its /usr and /etc are a node's (lab/lab.py)
set -euo pipefail
cd "$(dirname "$0")/.."
release=$1 kind=${2:-base}
case $release in
  12) codename=bookworm ;;
  13) codename=trixie ;;
  *) echo "release-root: Debian 12 or 13, not '$release'" >&2; exit 2 ;;
esac
case $kind in
  base) pkgs=() ;;
  build) pkgs=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev ca-certificates) ;;
  lab) pkgs=(pacemaker pacemaker-cli-utils corosync pcs resource-agents libvirt-daemon-system
             libvirt-clients qemu-system-x86 qemu-utils iproute2 procps python3 psmisc
             novnc) ;;  # novnc: the web console's client, served by a controller there
  *) echo "release-root: base, build or lab, not '$kind'" >&2; exit 2 ;;
esac
root=$PWD/build/debian-$release-$kind
[ "$kind" = base ] && [ "$release" = 12 ] && root=$PWD/build/debian-12-root  # the package test's
# Cached while it holds the same package list (a list that grew makes it again).
stamp="${pkgs[*]:-}"
if [ -f "$root/etc/debian_version" ] && [ "$(cat "$root/.kvm-warden-packages" 2>/dev/null || true)" = "$stamp" ]; then
  echo "$root"; exit 0
fi
rm -rf "$root"
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
tmp=$root.tmp
rm -rf "$tmp"
mkdir -p "$(dirname "$tmp")"
debootstrap --variant=minbase "$codename" "$tmp" "$mirror" >"$tmp.log" 2>&1 \
  || { tail -20 "$tmp.log" >&2; exit 1; }
if [ ${#pkgs[@]} -gt 0 ]; then
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  mount -t proc proc "$tmp/proc"
  trap 'umount -l "$tmp/proc" 2>/dev/null || true' EXIT
  chroot "$tmp" apt-get update -qq >>"$tmp.log" 2>&1
  # No daemon may start in the root while packages install (there is no init to ask).
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 0755 "$tmp/usr/sbin/policy-rc.d"
  chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${pkgs[@]}" >>"$tmp.log" 2>&1 \
    || { tail -20 "$tmp.log" >&2; exit 1; }
  rm -f "$tmp/usr/sbin/policy-rc.d"
  chroot "$tmp" apt-get clean
  umount -l "$tmp/proc"
  trap - EXIT
fi
printf '%s' "$stamp" >"$tmp/.kvm-warden-packages"
mv "$tmp" "$root"
rm -f "$tmp.log"
echo "$root"
