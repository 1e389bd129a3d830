# The salespulse image: every process of docker-compose.yml (worker, exporter, ingest, KPI
# publisher, simulator) is the `salespulse` command. Runtime dependencies only, pinned by
# requirements.runtime.lock (`make lock` derives it from requirements.lock); no test tools.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.runtime.lock ./
RUN pip install --no-cache-dir -r requirements.runtime.lock
COPY pyproject.toml README.md ./
COPY projections ./projections
COPY adapters ./adapters
COPY streams ./streams
COPY exporters ./exporters
COPY simulator ./simulator
COPY stack ./stack
COPY config ./config
# --no-deps: everything the package needs is already installed from the lock, pinned.
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 salespulse
USER salespulse
ENTRYPOINT ["salespulse"]
CMD ["worker"]
