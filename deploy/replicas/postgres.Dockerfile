# PostgreSQL from Debian's packages, built locally (no registry needed when
# BASE_IMAGE is the locally built `claudecluster-base:*`). On first start
# it creates the cluster and the `claudecluster` database and role with
# POSTGRES_PASSWORD; it listens on 127.0.0.1:5432 (host networking).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
# A new named volume takes this directory's owner and mode.
RUN install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
USER postgres
ENV PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["/bin/sh", "/usr/local/bin/postgres-entrypoint.sh"]
