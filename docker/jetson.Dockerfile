# lldif-edge on a Jetson with JetPack 6 (Jetson Linux r36.4: CUDA 12.6, TensorRT 10.3, Python 3.10).
# NEVER BUILT OR RUN: written from NVIDIA's documentation for the L4T images. See docs/jetson.md.
#
# Build on the Jetson (or with `docker buildx build --platform linux/arm64`), from the repository root:
#   docker build -f docker/jetson.Dockerfile -t lldif-edge:jp6 .
#   docker run --rm --runtime nvidia lldif-edge:jp6 info
#   docker run --rm -it --runtime nvidia --device /dev/video0 -v lldif-cache:/cache lldif-edge:jp6 \
#       run --camera 0 --backend tensorrt --package /opt/lldif/default_fp32 --json
# The base image must match the device's Jetson Linux release; JetPack 7 needs an r38 image and
# --build-arg CUDA_PYTHON="cuda-python==13.*".
ARG L4T_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0
FROM ${L4T_IMAGE}

ARG CUDA_PYTHON="cuda-python==12.6.*"
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# JetPack's TensorRT bindings for the system Python (normally already in the image), and venv support.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-libnvinfer python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*

# A venv that sees the system site-packages, hence JetPack's tensorrt, as on the device (docs/jetson.md).
RUN python3 -m venv --system-site-packages /opt/lldif-venv \
    && /opt/lldif-venv/bin/python -m pip install --upgrade pip \
    && /opt/lldif-venv/bin/python -c "import tensorrt; print('TensorRT', tensorrt.__version__)"
ENV PATH=/opt/lldif-venv/bin:$PATH

# The runtime install only (no torch), plus cuda-python for the image's CUDA.
COPY pyproject.toml README.md LICENSE /src/
COPY lldif_edge /src/lldif_edge
RUN pip install /src "${CUDA_PYTHON}" && rm -rf /src \
    && mkdir -p /opt/lldif \
    && ln -s "$(python -c 'from lldif_edge.package import WEIGHTS_DIR; print(WEIGHTS_DIR / "default_fp32")')" \
        /opt/lldif/default_fp32

# Engines are built on the first run, for this device: keep them in a volume.
ENV LLDIF_EDGE_CACHE=/cache
VOLUME /cache
ENTRYPOINT ["lldif-edge"]
CMD ["info"]
