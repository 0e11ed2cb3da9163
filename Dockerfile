# syntax=docker/dockerfile:1
# Build stage: make the wheel (with the default templates inside) and install it into a venv.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md config.example.yaml ./
COPY bridge/ bridge/
COPY templates/ templates/
RUN python -m venv /opt/bridge \
 && /opt/bridge/bin/pip install --no-cache-dir --disable-pip-version-check '.[postgres]' \
 && /opt/bridge/bin/pip uninstall -y pip setuptools

# Runtime stage: the venv only, as a non-root user, read-only root filesystem friendly.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="feishu-alert-bridge" \
      org.opencontainers.image.description="Alertmanager and Grafana webhooks in, signed and rate-limited Feishu/Lark cards out" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/feishu-alert-bridge/feishu-alert-bridge"
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /nonexistent --shell /usr/sbin/nologin bridge \
 && mkdir -p /etc/feishu-alert-bridge /var/lib/feishu-alert-bridge \
 && chown bridge:bridge /var/lib/feishu-alert-bridge
COPY --from=build /opt/bridge /opt/bridge
COPY config.example.yaml /etc/feishu-alert-bridge/config.yaml
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_CONFIG=/etc/feishu-alert-bridge/config.yaml \
    BRIDGE_STORAGE_PATH=/var/lib/feishu-alert-bridge/outbox.db
USER 10001:10001
VOLUME ["/var/lib/feishu-alert-bridge"]
EXPOSE 9095
# Asks the port the server listens on: BRIDGE_PORT when set, like `serve`.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('BRIDGE_PORT') or '9095'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/-/healthy', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["feishu-alert-bridge"]
CMD ["serve"]
