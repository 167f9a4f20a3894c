# Stablehand: one process, its SQLite database on the /data volume.
FROM python:3.11-slim

# VERSION defaults to bot/__init__.py's __version__ (tests/test_release.py keeps them equal).
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/stablehand/stablehand
LABEL org.opencontainers.image.title="Stablehand" \
      org.opencontainers.image.description="A Discord bot that gives a community image generation on its own RunPod GPU budget." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/stablehand.db

RUN useradd --create-home --uid 10001 stablehand \
    && mkdir /data \
    && chown stablehand:stablehand /data

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-cache-dir "./[postgresql]"

USER 10001
VOLUME ["/data"]

# `health` reads the heartbeat the bot writes next to its database every HEARTBEAT_INTERVAL.
HEALTHCHECK --interval=60s --timeout=10s --start-period=90s --retries=3 CMD ["python", "-m", "bot", "health"]

# The bot stops on SIGTERM: in-flight jobs stay in the database and resume on the next start.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
