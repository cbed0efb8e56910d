# syntax=docker/dockerfile:1
# reverbpy: a Pusher protocol 7 server. Build: docker build -t reverbpy .
# Run:   docker run -p 8080:8080 -e REVERB_APP_ID=... -e REVERB_APP_KEY=... -e REVERB_APP_SECRET=... reverbpy

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reverbpy ./reverbpy
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast,redis]'

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --home-dir /app reverbpy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels reverbpy[fast,redis] && rm -rf /wheels
USER reverbpy
WORKDIR /app
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; p=os.environ.get('REVERB_SERVER_PATH','').strip('/'); urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('REVERB_SERVER_PORT','8080') + ('/' + p if p else '') + '/up', timeout=2); sys.exit(0)"]
# exec form: reverbpy is PID 1 and receives SIGTERM directly
ENTRYPOINT ["reverbpy", "serve"]
