# The salespulse worker (and, later, the exporter): one image, the `salespulse` command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY projections ./projections
COPY streams ./streams
COPY exporters ./exporters
COPY simulator ./simulator
COPY stack ./stack
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 salespulse
USER salespulse
ENTRYPOINT ["salespulse"]
CMD ["worker"]
