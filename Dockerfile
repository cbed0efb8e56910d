# syntax=docker/dockerfile:1
# reverbpy: a Pusher protocol 7 server (see docs/operations.md).
#   Build: docker build -t reverbpy .
#   Run:   docker run -p 8080:8080 -e REVERB_APP_ID=... -e REVERB_APP_KEY=... -e REVERB_APP_SECRET=... reverbpy
#   Stop:  docker stop -t 15 (more than REVERB_SHUTDOWN_GRACE, 10 s by default)

# --- console assets: uPlot and pusher-js from npm, the versions package-lock.json pins -----
# (the console serves them itself, docs/console.md); the same steps as the Makefile's target.
FROM node:20-bookworm-slim AS console-assets
WORKDIR /src/reverbpy/console
COPY reverbpy/console/package.json reverbpy/console/package-lock.json reverbpy/console/vendor.mjs ./
RUN npm ci --no-audit --no-fund --loglevel=error && node vendor.mjs

# --- build: a virtual environment with reverbpy and its extras, nothing else --------------
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/reverbpy
COPY pyproject.toml README.md ./
COPY reverbpy ./reverbpy
COPY --from=console-assets /src/reverbpy/console/static/vendor ./reverbpy/console/static/vendor
RUN /opt/reverbpy/bin/pip install '.[fast,redis]' \
 && find /opt/reverbpy -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && /opt/reverbpy/bin/python -m compileall -q /opt/reverbpy/lib

# --- runtime: the venv on a slim Python, as an unprivileged user --------------------------
FROM python:3.12-slim-bookworm
ENV PATH=/opt/reverbpy/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    REVERB_SERVER_HOST=0.0.0.0 REVERB_SERVER_PORT=8080
RUN useradd --system --uid 10001 --no-create-home --home-dir /app reverbpy
COPY --from=build /opt/reverbpy /opt/reverbpy
WORKDIR /app
USER 10001
EXPOSE 8080
# Liveness on /up (cheap, no auth); load balancers should use /ready, which turns 503 on SIGTERM.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os,ssl,urllib.request as u; e=os.environ.get; tls=bool(e('REVERB_TLS_CERT')); p=e('REVERB_SERVER_PATH','').strip('/'); u.urlopen(('https' if tls else 'http')+'://127.0.0.1:'+e('REVERB_SERVER_PORT','8080')+('/'+p if p else '')+'/up', timeout=2, context=ssl._create_unverified_context() if tls else None)"]
# Exec form: reverbpy is PID 1 and handles SIGTERM itself (4200 to clients, webhooks flushed,
# exit 0); a second signal exits at once. SIGHUP reloads the apps file.
STOPSIGNAL SIGTERM
ENTRYPOINT ["reverbpy", "serve"]
