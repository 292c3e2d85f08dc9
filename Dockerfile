# riverline: one image for every role (run, learner, predictor, replay, topics create, ...).
#   docker build -t riverline .
#   docker run --rm riverline --help
# docker-compose.yml runs it against Kafka and Redis; see docs/tutorials/compose.md.

# Build stage: a virtualenv with riverline and the librdkafka client (riverline[fast]).
# The wheels of every dependency exist for this platform, so no compiler is needed.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/riverline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY producers ./producers
COPY consumers ./consumers
RUN /opt/riverline/bin/pip install ".[fast]"

# Runtime stage: the virtualenv, the shipped configs, and an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/riverline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/riverline /opt/riverline
COPY configs /configs
# The default --config (configs/demo.yaml) resolves from the home directory too.
RUN useradd --create-home --uid 10001 --user-group riverline \
    && ln -s /configs /home/riverline/configs
USER riverline
WORKDIR /home/riverline
# /metrics, /healthz and /readyz (when started with --metrics-port 9400).
EXPOSE 9400
ENTRYPOINT ["riverline"]
# The all-in-one consumer; compose runs `learner` and `predictor` instead. The broker, Redis
# and the checkpoint secret come from RIVERLINE_KAFKA_BOOTSTRAP, RIVERLINE_REDIS_URL and
# RIVERLINE_CHECKPOINT_SECRET.
CMD ["run", "--config", "/configs/compose.yaml", "--metrics-port", "9400"]
