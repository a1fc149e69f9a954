#!/usr/bin/env bash
# Build talkface's environment: Debian libraries for headless OpenGL and speech, a .venv with
# CPU torch (or CUDA torch when an NVIDIA driver is present), the package and its extras.
# Idempotent: every step checks first and skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TALKFACE_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${TALKFACE_TORCH_VERSION:-2.13.0}
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 espeak-ng"
STAMP="$VENV/.talkface-setup"
t0=$(date +%s)

log() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (headless GL through EGL and OSMesa; espeak-ng for the demo's speech).
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if ! "$PY" -c "import venv, ensurepip" 2>/dev/null; then missing="$missing python3-venv"; fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    log "missing Debian packages:$missing; install them as root: apt-get install$missing"; exit 1; fi
  log "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  log "Debian packages present"
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
HASH=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && "$VPY" -c "import talkface, torch" 2>/dev/null; then
  log "environment up to date ($(( $(date +%s) - t0 )) s)"
  exit 0
fi
PIP="$VPY -m pip install -q --disable-pip-version-check"

# 3. torch: the CPU build on machines without CUDA (never the multi-GB CUDA wheels there).
if "$VPY" -c "import torch" 2>/dev/null; then
  log "torch present: $("$VPY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  log "NVIDIA GPU found: installing CUDA torch"
  $PIP "torch==$TORCH_VERSION"
else
  log "no CUDA: installing CPU torch $TORCH_VERSION+cpu"
  if ! $PIP "torch==$TORCH_VERSION+cpu"; then
    log "no CPU build of torch $TORCH_VERSION was found by pip."
    log "Point pip at a CPU wheel (PIP_FIND_LINKS=dir-with-torch-cpu-wheel) or set TALKFACE_TORCH_VERSION."
    exit 1
  fi
fi

# 4. The package with its extras, then PyOpenGL >= 3.1.4 in a second step: pyrender 0.1.45 pins
#    PyOpenGL 3.1.0, which lacks OSMesaCreateContextAttribs (one resolve of both is impossible).
log "installing talkface and its extras"
$PIP -e ".[render,dev,view]"
$PIP "PyOpenGL==3.1.10" 2>&1 | grep -v "pyrender 0.1.45 requires PyOpenGL==3.1.0" || true
"$VPY" -c "import OpenGL; assert OpenGL.__version__ == '3.1.10', OpenGL.__version__"
# With an NVIDIA GPU, torch must see it: a CPU build or a CUDA build newer than the driver would
# train silently on the CPU.
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  "$VPY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else f'torch {torch.__version__} does not see the NVIDIA GPU; install a torch build for this driver (nvidia-smi shows its CUDA version)')"
fi
echo "$HASH" > "$STAMP"
log "environment ready in $(( $(date +%s) - t0 )) s"
