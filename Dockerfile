# syntax=docker/dockerfile:1
# Switchyard's image: the package installed as a wheel, the demo model built in, a non-root
# user, nothing written at run time outside /tmp (k8s/ mounts the root filesystem read-only).
#
#   docker build -t switchyard:0.1.0 .                                       # CPU
#   docker build --build-arg ACCELERATOR=cuda -t switchyard:0.1.0-cuda .     # ONNX Runtime GPU
#   docker build --build-arg EXTRAS=ray -t switchyard-ray:0.1.0 .            # k8s/overlays/ray
#   docker build --build-arg EXTRAS=ray --build-arg ACCELERATOR=cuda -t switchyard-ray-cuda:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- The wheel: built from the sources only (.dockerignore keeps the rest out).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY switchyard/ switchyard/
COPY demo/ demo/
COPY protos/ protos/
COPY router/ router/
COPY runtimes/ runtimes/
COPY server/ server/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- The image.
FROM ${PYTHON_IMAGE} AS runtime
# cpu: onnxruntime; cuda: onnxruntime-gpu with the CUDA and cuDNN libraries from their pip
# wheels (no CUDA base image: the node's NVIDIA driver is all the GPU needs besides them).
ARG ACCELERATOR=cpu
# Extras of the package, comma-separated: ray (Ray Serve, for k8s/overlays/ray), triton, mlflow.
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHYARD_DEMO_DIR=/opt/switchyard/demo
RUN groupadd --gid 10001 switchyard \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/switchyard \
       --shell /usr/sbin/nologin switchyard
COPY --from=wheel /wheels/ /wheels/
RUN set -eu; \
    wheel=$(ls /wheels/switchyard-*.whl); \
    pip install "${wheel}${EXTRAS:+[$EXTRAS]}"; \
    if [ "$ACCELERATOR" = cuda ]; then \
        pip uninstall -y onnxruntime; \
        pip install "onnxruntime-gpu[cuda,cudnn]>=1.21"; \
        python -c "import glob, sysconfig; \
print('\n'.join(sorted(glob.glob(sysconfig.get_paths()['purelib'] + '/nvidia/*/lib'))))" \
            > /etc/ld.so.conf.d/nvidia-wheels.conf; \
        ldconfig; \
    elif [ "$ACCELERATOR" != cpu ]; then \
        echo "ACCELERATOR must be cpu or cuda, not $ACCELERATOR" >&2; exit 1; \
    fi; \
    rm -rf /wheels
# The demo's model and feature files, for the embedded default config (`switchyard serve`
# with no --config) and k8s/overlays' configs: built now, never at run time.
RUN python -m switchyard.demo.build_model --out "$SWITCHYARD_DEMO_DIR" \
    && chmod -R a+rX /opt/switchyard
USER 10001:10001
WORKDIR /home/switchyard
# REST, gRPC, metrics (server.http_port, grpc_port, metrics_port).
EXPOSE 8000 8001 8002
ENTRYPOINT ["switchyard"]
CMD ["serve"]
