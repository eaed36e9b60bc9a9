# kvm-warden service image. Build: docker build -t kvm-warden .
# Run on a cluster node with the host's Pacemaker and libvirt sockets (see README):
#   docker run --net=host -v /var/run/libvirt:/var/run/libvirt \
#     -v /var/lib/pacemaker:/var/lib/pacemaker -v /etc/kvm-warden:/etc/kvm-warden:ro \
#     kvm-warden run --desired /etc/kvm-warden/desired.yaml
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc pkg-config libvirt-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller controller
COPY probes probes
COPY reconcilers reconcilers
RUN python3 -m venv /opt/kvm-warden && /opt/kvm-warden/bin/pip install --no-cache-dir .

FROM debian:12-slim
# Pacemaker's CLI (crm_mon, cibadmin, crm_resource) and libvirt's client library only.
RUN apt-get update && apt-get install -y --no-install-recommends \
      python3 pacemaker-cli-utils libvirt0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --groups haclient kvm-warden
COPY --from=build /opt/kvm-warden /opt/kvm-warden
USER kvm-warden
EXPOSE 9810
ENTRYPOINT ["/opt/kvm-warden/bin/kvm-warden"]
CMD ["run", "--desired", "/etc/kvm-warden/desired.yaml"]
