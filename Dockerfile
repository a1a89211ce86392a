# The piping-server image: `docker run -p 8080:8080 IMAGE [server flags...]`. Dockerfile is a copy of
# Containerfile (and .dockerignore of .containerignore): change both (tests/deploy/test_container.py).
#
#   docker build -t piping-server .
#   podman build --format docker -t piping-server .   (the OCI format has no HEALTHCHECK)
#   docker run --rm -p 8080:8080 --stop-timeout 35 piping-server --workers auto
#
# Every argument after the image name is a flag of piping-server (ENTRYPOINT, no CMD). SIGTERM
# (`docker stop`) goes straight to the server, which is PID 1 (exec form, no shell): it stops
# accepting, lets running transfers finish for --shutdown-grace (30 s by default) and exits. Docker
# kills after 10 s unless told otherwise: give `--stop-timeout` / `docker stop -t` (compose:
# stop_grace_period) a few seconds more than the grace.
#
# The bases are build arguments so that a mirror or a locally made base can stand in:
#   --build-arg NODE_IMAGE=... --build-arg PYTHON_IMAGE=...
# PYTHON_IMAGE needs python3 with venv (Debian: python3-venv); NODE_IMAGE needs node 18+ and npm.
ARG NODE_IMAGE=node:20-bookworm-slim
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# 1. The page's browser libraries (noVNC, OpenPGP.js, the SSH terminal), bundled by npm.
FROM ${NODE_IMAGE} AS frontend
WORKDIR /build/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# 2. The package and its dependencies in a virtualenv (pip and the sources stay in this stage).
FROM ${PYTHON_IMAGE} AS package
# A C compiler, and Python's headers where the base has none (Debian's python3; the python image has
# them), so that the install compiles the transfer path with mypyc (docs/design.md): they stay in
# this stage, the image gets the compiled modules only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if ! python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))"; \
       then apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py MANIFEST.in README.md LICENSE /build/
COPY src/ /build/src/
COPY --from=frontend /build/src/piping_server/pages/static/vendor/ /build/src/piping_server/pages/static/vendor/
# PIPING_SKIP_FRONTEND: the bundles come from stage 1 (there is no npm here); the checks after the
# install make sure they made it into the venv, and that the transfer path is compiled.
RUN python3 -m venv /opt/piping-server \
    && PIPING_SKIP_FRONTEND=1 /opt/piping-server/bin/pip install --no-cache-dir --disable-pip-version-check /build \
    && /opt/piping-server/bin/python -c "from piping_server.pages._static import VENDOR_JS, VENDOR_NAMES; \
assert sorted(VENDOR_JS) == sorted(VENDOR_NAMES), 'the page bundles are missing from the install'" \
    && /opt/piping-server/bin/python -c "from piping_server._compiled import why_sources; \
assert why_sources() is None, 'the transfer path is not compiled: ' + str(why_sources())"

# 3. The image: the base, the virtualenv, an unprivileged user.
FROM ${PYTHON_IMAGE}
COPY --from=package /opt/piping-server /opt/piping-server
RUN groupadd --gid 10001 piping \
    && useradd --uid 10001 --gid piping --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin piping
USER piping:piping
ENV PATH=/opt/piping-server/bin:$PATH \
    PYTHONUNBUFFERED=1
EXPOSE 8080
STOPSIGNAL SIGTERM
# No curl in a slim image: the venv's Python asks /version on the server's --http-port.
COPY deploy/container-healthcheck.py /opt/piping-server/healthcheck.py
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/piping-server/bin/python", "/opt/piping-server/healthcheck.py"]
ENTRYPOINT ["/opt/piping-server/bin/piping-server"]
