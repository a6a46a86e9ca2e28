# syntax=docker/dockerfile:1
# The lungcds image: one image for every role (api+scp, CPU worker, GPU worker, migrations);
# the command chooses the role, e.g. `docker run IMAGE worker --queues gpu`.
#
# torch comes first from a CUDA wheel index, then `pip install .` finds it already satisfying
# pyproject's `torch>=2.2` and installs nothing more of it.  Pick the index that matches the
# GPU hosts' driver (cu12x wheels need an NVIDIA driver of the 12.x series or newer); for a
# CPU-only image use --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
#
#   docker build -t lungcds:0.5.0 .
#   docker build -t lungcds:0.5.0-cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# No DCMTK in the image: the SCP, the C-STORE/C-ECHO client and C-GET/C-MOVE are pynetdicom;
# DCMTK's storescu/echoscu are only test and benchmark peers.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The project's torch pin (`make` installs the same version on developer machines).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lungcds
ENV PATH=/opt/lungcds/bin:$PATH
# Its own layer: the CUDA wheels are several GB and change far less often than the code.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY models ./models
COPY dicom_node ./dicom_node
COPY reports ./reports
RUN pip install . \
    && python -c "import torch, server.cli.main; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM ${PYTHON_IMAGE} AS runtime
ARG LUNGCDS_UID=10001
ENV PATH=/opt/lungcds/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LUNGCDS_DATA_DIR=/var/lib/lungcds
# The PDF report embeds DejaVu Sans (reports/pdf_layout.py) and refuses to render without it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid "${LUNGCDS_UID}" lungcds \
    && useradd --system --uid "${LUNGCDS_UID}" --gid lungcds --home-dir /var/lib/lungcds --shell /usr/sbin/nologin lungcds \
    && mkdir -p /var/lib/lungcds/weights \
    && chown -R lungcds:lungcds /var/lib/lungcds
COPY --from=build /opt/lungcds /opt/lungcds
USER lungcds
WORKDIR /var/lib/lungcds
VOLUME ["/var/lib/lungcds"]
# DICOM SCP and REST API (the Settings defaults dicom_port and api_port).
EXPOSE 11112 8080
ENTRYPOINT ["lungcds"]
CMD ["serve"]
