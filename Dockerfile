# streamjobs: API and worker image. Build: docker build -t streamjobs .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY engine ./engine
COPY lua ./lua
RUN pip install . \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home streamjobs
# The example handlers, importable from the working directory (`streamjobs worker handlers`).
COPY handlers ./handlers

USER 10001:10001
EXPOSE 8000 9100
ENTRYPOINT ["streamjobs"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
