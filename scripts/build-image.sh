#!/usr/bin/env bash
# Builds the kvm-warden container image (idempotent): `make image`.
#
# On a normal Docker/Podman host: `docker build -t kvm-warden .` is all it takes. Here no image
# registry is reachable, so the base image is made locally: a minimal Debian root filesystem
# from the Debian mirror (debootstrap), imported as localhost/debian:N-slim, and the build runs
# with chroot isolation (this machine's cgroup setup refuses podman's default runtime). The
# host's CA bundle and pip configuration are mounted so apt and pip inside reach the registries.
set -euo pipefail
cd "$(dirname "$0")/.."
# The image's Debian release: 13 (trixie, Debian's stable release) unless RELEASE=12.
RELEASE=${RELEASE:-13}
case $RELEASE in
  12) codename=bookworm ;;
  13) codename=trixie ;;
  *) echo "build-image: RELEASE is 12 or 13" >&2; exit 2 ;;
esac
TAG=${KVM_WARDEN_IMAGE:-kvm-warden:test}
BASE=localhost/debian:$RELEASE-slim

if ! podman image exists "$BASE"; then
  # The Debian mirror apt already uses here (or DEBIAN_MIRROR).
  mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' \
           /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
  [ -n "$mirror" ] || { echo "build-image: set DEBIAN_MIRROR (no apt source found)" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/kvm-warden-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-image: debootstrap $codename from $mirror (the base image, once)"
  debootstrap --variant=minbase "$codename" "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
fi

# pip inside reaches the registry with this host's pip configuration and CA bundle (mounted
# beside the image's own /etc/ssl, which its ca-certificates package must be free to write).
mounts=() args=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
  args+=(--build-arg PIP_CERT=/run/host-ca.crt)
fi
[ -f /etc/pip.conf ] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
started=$(date +%s)
podman build --format docker --network=host --isolation=chroot "${mounts[@]}" "${args[@]}" \
  --build-arg BASE="$BASE" --build-arg VERSION="$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')" \
  -t "$TAG" . >/var/tmp/kvm-warden-image-build-$RELEASE.log 2>&1 \
  || { tail -30 /var/tmp/kvm-warden-image-build-$RELEASE.log >&2; exit 1; }
size=$(podman image inspect --format '{{.Size}}' "$TAG")
echo "build-image: $TAG (Debian $RELEASE) built in $(( $(date +%s) - started )) s, $(( size / 1024 / 1024 )) MB"
