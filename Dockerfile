# kvm-warden: the controller image (the node agent needs the host's libvirt and corosync
# directly; run it from the package or the systemd unit on every node).
#
# Build:  docker build -t kvm-warden .          (here, without a registry: make image)
# Run on a cluster node, next to the host's Pacemaker (its IPC sockets are abstract unix
# sockets, so the container shares the host's network namespace) with the desired file and the
# state directory (the ledger; shared storage when the controller is a cluster resource):
#   docker run -d --name kvm-warden --net=host --ipc=host \
#     -v /etc/kvm-warden:/etc/kvm-warden:ro -v /var/lib/kvm-warden:/var/lib/kvm-warden \
#     -v /var/lib/pacemaker:/var/lib/pacemaker:ro kvm-warden \
#     controller --desired /etc/kvm-warden/desired.yaml --keys /etc/kvm-warden/controller.key_secret \
#       --allow /etc/kvm-warden/allow --agent kvm1=tcp://10.0.0.1:9820 ...
# The user inside is `kvm-warden` in group haclient (gid as on the host: pass --group-add if
# the host's haclient gid differs), which Pacemaker's CIB access control needs.
ARG BASE=debian:13-slim

FROM ${BASE} AS build
# Set only where the build needs a CA bundle of its own for pip (scripts/build-image.sh).
ARG PIP_CERT
RUN apt-get update && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc pkg-config libvirt-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md CHANGELOG.md ./
COPY docs/reference.md docs/testing.md docs/metrics.md docs/architecture.md docs/
COPY controller controller
COPY probes probes
COPY reconcilers reconcilers
COPY config config
COPY scripts/build-deb.sh scripts/cli_docs.py scripts/
# One packaging path: the image installs the same Debian package as a node (make deb).
RUN PIP_NO_CACHE_DIR=1 scripts/build-deb.sh && mv build/deb/kvm-warden_*.deb /kvm-warden.deb
# noVNC for the console page: the files of Debian's novnc package, without its dependencies
# (nodejs, websockify: the controller is the WebSocket end itself).
RUN apt-get update && cd /tmp && apt-get download novnc \
    && dpkg-deb -x novnc_*.deb /novnc && rm -f novnc_*.deb && rm -rf /var/lib/apt/lists/*

FROM ${BASE}
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="kvm-warden" \
      org.opencontainers.image.description="Self-healing controller for Pacemaker/Corosync KVM clusters with GFS2" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}"
# Runtime only: the package and what it depends on -- Python, Pacemaker's CLI (crm_mon,
# cibadmin, crm_resource, crm_diff), libvirt's client library; no compiler, no headers (those
# stayed in the build stage). Its postinst makes the kvm-warden user (in haclient) and
# /var/lib/kvm-warden, as on a node.
COPY --from=build /kvm-warden.deb /tmp/kvm-warden.deb
RUN apt-get update && apt-get install -y --no-install-recommends /tmp/kvm-warden.deb \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /tmp/kvm-warden.deb
COPY --from=build /novnc/usr/share/novnc /usr/share/novnc
USER kvm-warden
EXPOSE 9810
# /healthz needs no password; over https when a web configuration sets TLS (its own loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["/opt/kvm-warden/bin/python", "-c", "import ssl, urllib.request as u\nfor url, ctx in (('http://127.0.0.1:9810/healthz', None), ('https://127.0.0.1:9810/healthz', ssl._create_unverified_context())):\n    try:\n        u.urlopen(url, timeout=4, context=ctx)\n        raise SystemExit(0)\n    except Exception:\n        pass\nraise SystemExit(1)"]
ENTRYPOINT ["/opt/kvm-warden/bin/kvm-warden"]
CMD ["controller", "--desired", "/etc/kvm-warden/desired.yaml"]
