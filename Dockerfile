# kube-audit-exporter's image: two stages, the final one a slim Python with
# the installed package and nothing to build with.
#
#   docker build -t kube-audit-exporter .
#   docker run --rm -p 9784:9784 kube-audit-exporter run --logfile.path /logs/audit.log
#
# The Helm chart runs it with a read-only root filesystem as uid 65532.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for exporter._speedups, the decoder's fast path in C (the
# image's Python has its headers). It stays in this stage: the final one
# gets the built package. Any gcc will do, hence no pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY exporter ./exporter
# A wheel of the project (its one C module compiled), then an install that
# takes only prebuilt wheels (orjson, cramjam, ...); the import check fails
# the build rather than ship an image without the C fast path. The byte code
# is compiled now because the root filesystem is read-only at run time.
# The managed-cluster sources' SDKs (extras eks, gke, aks) are in the image;
# an extra this version does not define is only warned about.
ARG EXTRAS=eks,gke,aks
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/kube-audit-exporter \
 && /opt/kube-audit-exporter/bin/pip install --only-binary=:all: "$(ls /wheels/*.whl)[${EXTRAS}]" \
 && /opt/kube-audit-exporter/bin/python -c "import exporter._speedups" \
 && /opt/kube-audit-exporter/bin/pip uninstall --yes pip \
 && /opt/kube-audit-exporter/bin/python -m compileall -q /opt/kube-audit-exporter

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kube-audit-exporter" \
      org.opencontainers.image.description="Kubernetes audit events to Prometheus metrics, Loki and Alertmanager" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/kube-audit-exporter /opt/kube-audit-exporter
ENV PATH=/opt/kube-audit-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532: the conventional "nonroot" uid; no shell login, no home, no sudo.
USER 65532:65532
EXPOSE 9784 8443
ENTRYPOINT ["kube-audit-exporter"]
CMD ["run"]
