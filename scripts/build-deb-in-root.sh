#!/usr/bin/env bash
# scripts/build-deb.sh for another Debian release than this machine's: run inside a clean root
# of that release (scripts/release-root.sh RELEASE build, cached under build/) on a copy of
# this tree, so the package's environment is made by that release's python3 against its
# libvirt. The package lands in build/deb/ beside this machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
release=$1
root=$(scripts/release-root.sh "$release" build)
src=$root/src
rm -rf "$src"
mkdir -p "$src" build/deb
# The tree as git has it (tracked and untracked, not ignored): no venv, no build output.
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -C "$src" -xf -
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi
mount -t proc proc "$root/proc"
# pip reaches the registry with this machine's CA bundle (what its pip.conf names)
mkdir -p "$root/host-certs"
mount --bind /etc/ssl/certs "$root/host-certs"
trap 'umount -l "$root/proc" "$root/host-certs" 2>/dev/null || true' EXIT
out=$(chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  PIP_CERT=/host-certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
  RELEASE="$release" /src/scripts/build-deb.sh)
deb=$(printf '%s\n' "$out" | sed -n 's|^build-deb: /src/\(build/deb/[^ ]*\.deb\).*|\1|p')
[ -n "$deb" ] || { printf '%s\n' "$out" >&2; exit 1; }
cp "$src/$deb" build/deb/
rm -rf "$src"
echo "build-deb: $PWD/$deb (Debian $release, built in $root)"
