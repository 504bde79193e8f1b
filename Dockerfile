# liqmon image: one image for every process (worker, live feed, replay).
#   docker build -t liqmon:0.1.0 .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fixed ids so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 liqmon \
    && useradd --system --uid 10001 --gid liqmon --home-dir /home/liqmon --create-home \
       --shell /usr/sbin/nologin liqmon

WORKDIR /opt/liqmon

# Only what the package needs (see .dockerignore); README.md is optional at build time.
COPY pyproject.toml README.md* ./
COPY monitor ./monitor
COPY streams ./streams
COPY replay ./replay
RUN pip install . && rm -rf /opt/liqmon/build

USER liqmon:liqmon
WORKDIR /home/liqmon

# Prometheus exporters: worker 9464, live feed 9465, replay 9466.
EXPOSE 9464 9465 9466

ENTRYPOINT ["liqmon"]
CMD ["worker"]
