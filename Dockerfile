# The service image: Celery worker, beat and the HTTP API all run from it (docker-compose.yml).
# Node is only needed to compile the contracts, so it stays in the first stage; the chain is
# a separate service (or an external RPC), not part of this image.

FROM node:20-slim AS contracts
WORKDIR /src
COPY package.json package-lock.json ./
# solc-js and OpenZeppelin only: the optional packages are anvil's native binaries.
RUN npm ci --omit=optional --no-audit --no-fund --loglevel=error
COPY scripts/compile.mjs scripts/
COPY contracts/ contracts/
RUN node scripts/compile.mjs --quiet

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARKET_VAULT_DIR=/var/lib/market/vault
WORKDIR /app
COPY pyproject.toml README.md ./
COPY market/ market/
COPY workers/ workers/
COPY --from=contracts /src/market/artifacts/ market/artifacts/
# Editable, so that the code (and the artifacts beside it) is imported from /app.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /app market \
    && mkdir -p "$MARKET_VAULT_DIR" \
    && chown market "$MARKET_VAULT_DIR" \
    && chmod 700 "$MARKET_VAULT_DIR"
# A new named volume mounted on the vault directory takes this owner and mode.
USER market
CMD ["celery", "-A", "workers.celeryconf", "worker", "--loglevel=info"]
