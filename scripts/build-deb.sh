#!/usr/bin/env bash
# Builds the Debian package (idempotent): `make deb` -> build/deb/kvm-warden_VERSION~debN_ARCH.deb
#
# What it holds, and why:
# - /opt/kvm-warden: kvm-warden with its own Python environment on Debian's python3. Debian 12
#   packages neither pyzmq with the CURVE build nor msgspec, aiohttp or libvirt-python at the
#   versions kvm-warden pins, so they are pinned wheels here (built against Debian's
#   libvirt), not Debian's python3-* packages; Python itself, Pacemaker's tools, libvirt's
#   library and noVNC are Debian's (Depends/Recommends).
# - the units (/lib/systemd/system), /etc/default/kvm-warden and the corosync IPC entry for
#   the agent's user (/etc/corosync/uidgid.d/kvm-warden; both conffiles), the alert agent
#   (/usr/lib/kvm-warden/kvm-warden-alert), /usr/bin/kvm-warden, a man page and bash and zsh completion
#   generated from the CLI's parser, the example desired file, the dashboard and the rules.
# - maintainer scripts that make the `kvm-warden` user (in haclient and libvirt) and its
#   directories, and start nothing: which node runs the controller is Pacemaker's call.
#
# One package per Debian release, from one tree: `RELEASE=12` (Python 3.11) or `RELEASE=13`
# (Python 3.13); the default is this machine's release. For the other release it builds in a
# clean root of that release (scripts/release-root.sh, cached under build/), so the bundled
# environment is made by that release's python3 against its libvirt. Version `X~debN`; Depends
# on exactly that python3 minor version.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST_RELEASE=$(cut -d. -f1 /etc/debian_version)
RELEASE=${RELEASE:-$HOST_RELEASE}
OUT=$PWD/build/deb
if [ "$RELEASE" != "$HOST_RELEASE" ]; then
  exec scripts/build-deb-in-root.sh "$RELEASE"
fi
PYTHON=${PYTHON:-/usr/bin/python3}
VERSION=$($PYTHON -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')~deb$RELEASE
PYVER=$($PYTHON -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYNEXT=$($PYTHON -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
ARCH=$(dpkg --print-architecture)
ROOT=$OUT/root-$RELEASE
PREFIX=/opt/kvm-warden
DEB=$OUT/kvm-warden_${VERSION}_${ARCH}.deb

rm -rf "$ROOT"
mkdir -p "$ROOT$PREFIX" "$ROOT/DEBIAN"
started=$(date +%s)

# The environment, built in the staging tree, then told where it will live.
$PYTHON -m venv "$ROOT$PREFIX"
"$ROOT$PREFIX/bin/pip" install -q --no-compile --no-warn-script-location . \
  >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log" >&2; exit 1; }
rm -rf "$ROOT$PREFIX"/lib/python3*/site-packages/pip "$ROOT$PREFIX"/bin/pip* \
       "$ROOT$PREFIX"/bin/activate* "$ROOT$PREFIX"/bin/Activate.ps1
find "$ROOT$PREFIX" -name __pycache__ -prune -exec rm -rf {} +
grep -rlI --null "$ROOT$PREFIX" "$ROOT$PREFIX" | xargs -0 -r sed -i "s|$ROOT$PREFIX|$PREFIX|g"
if grep -rqI "$ROOT" "$ROOT$PREFIX"; then
  echo "build-deb: the staging path is still written somewhere in $PREFIX" >&2; exit 1
fi

inst() { install -D -m "$1" "$2" "$ROOT$3"; }
inst 0644 config/systemd/kvm-warden-agent.service /lib/systemd/system/kvm-warden-agent.service
inst 0644 config/systemd/kvm-warden-controller.service \
  /lib/systemd/system/kvm-warden-controller.service
inst 0644 config/systemd/kvm-warden.default /etc/default/kvm-warden
inst 0644 config/corosync/kvm-warden.uidgid /etc/corosync/uidgid.d/kvm-warden
inst 0755 probes/pacemaker/kvm_warden_alert.py /usr/lib/kvm-warden/kvm-warden-alert
inst 0644 config/desired-state.example.yaml /usr/share/kvm-warden/desired-state.example.yaml
inst 0644 config/desired-state.schema.json /usr/share/kvm-warden/desired-state.schema.json
inst 0644 config/grafana/kvm-warden.json /usr/share/kvm-warden/grafana/kvm-warden.json
inst 0644 config/prometheus/kvm-warden-rules.yml /usr/share/kvm-warden/prometheus/kvm-warden-rules.yml
inst 0644 config/pacemaker/controller-ha.pcs /usr/share/kvm-warden/pacemaker/controller-ha.pcs
inst 0644 README.md /usr/share/doc/kvm-warden/README.md
inst 0644 CHANGELOG.md /usr/share/doc/kvm-warden/CHANGELOG.md
for doc in reference testing metrics architecture; do
  inst 0644 docs/$doc.md /usr/share/doc/kvm-warden/$doc.md
done
mkdir -p "$ROOT/usr/bin" "$ROOT/usr/share/man/man1" "$ROOT/usr/share/bash-completion/completions"
ln -s "$PREFIX/bin/kvm-warden" "$ROOT/usr/bin/kvm-warden"
"$ROOT$PREFIX/bin/python" -I scripts/cli_docs.py man | gzip -9n > "$ROOT/usr/share/man/man1/kvm-warden.1.gz"
"$ROOT$PREFIX/bin/python" -I scripts/cli_docs.py bash-completion \
  > "$ROOT/usr/share/bash-completion/completions/kvm-warden"
mkdir -p "$ROOT/usr/share/zsh/vendor-completions"
"$ROOT$PREFIX/bin/python" -I scripts/cli_docs.py zsh-completion \
  > "$ROOT/usr/share/zsh/vendor-completions/_kvm-warden"

size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<EOF
Package: kvm-warden
Version: $VERSION
Architecture: $ARCH
Maintainer: kvm-warden developers <kvm-warden@localhost>
Installed-Size: $size
Depends: python3 (>= $PYVER), python3 (<< $PYNEXT), libvirt0, pacemaker-cli-utils, adduser, passwd
Recommends: novnc, corosync, libvirt-clients
Suggests: prometheus, prometheus-alertmanager
Section: admin
Priority: optional
Description: self-healing controller for Pacemaker/Corosync KVM clusters
 kvm-warden keeps a Pacemaker/Corosync KVM cluster with GFS2 shared storage in the
 state its operators declare in one desired-state file, acting only through
 Pacemaker: every change gated (quorum, fencing, maintenance, rate limits, the
 scheduler's preview), audited and exported as Prometheus metrics, with a web view.
 .
 The package starts nothing: enable the node agent on every node and let Pacemaker
 run the controller (/usr/share/doc/kvm-warden/README.md).
EOF
printf '%s\n' /etc/default/kvm-warden /etc/corosync/uidgid.d/kvm-warden >"$ROOT/DEBIAN/conffiles"
cat >"$ROOT/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# kvm-warden: its user and directories. Starts nothing.
set -e
if [ "$1" = configure ]; then
    if ! getent passwd kvm-warden >/dev/null; then
        adduser --system --group --no-create-home --home /var/lib/kvm-warden \
            --quiet kvm-warden
    fi
    for g in haclient libvirt; do   # the CIB and libvirt's read-only socket
        if getent group "$g" >/dev/null; then adduser --quiet kvm-warden "$g"; fi
    done
    install -d -o root -g kvm-warden -m 0750 /etc/kvm-warden /etc/kvm-warden/keys \
        /etc/kvm-warden/allow
    install -d -o kvm-warden -g kvm-warden -m 0750 /var/lib/kvm-warden /var/log/kvm-warden \
        /etc/kvm-warden/desired   # the web view's reviewed edits write the desired file here
    if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
fi
exit 0
EOF
cat >"$ROOT/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# Purge removes what kvm-warden wrote on this node (its state directory, keys and logs);
# a state directory on shared storage is the cluster's and stays.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/kvm-warden /var/log/kvm-warden /etc/kvm-warden
    if getent passwd kvm-warden >/dev/null; then deluser --quiet --system kvm-warden || true; fi
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null || true; fi
exit 0
EOF
chmod 0755 "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "build-deb: $DEB ($(( $(stat -c %s "$DEB") / 1024 / 1024 )) MB) in $(( $(date +%s) - started )) s"
