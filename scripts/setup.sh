#!/usr/bin/env bash
# Create .venv and install nni-diffusionnag with its test and example extras.
# Idempotent: a second run only checks. On a machine without an NVIDIA GPU it installs the CPU build
# of PyTorch and never a CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
    pip_install "torch==$TORCH_VERSION"
  else
    echo "[setup] no GPU: installing the CPU build of torch==$TORCH_VERSION"
    # Ask pip what a plain install would fetch: a wheel your pip configuration provides (find-links,
    # a mirror) is used when it is a CPU build; if it would pull CUDA (nvidia-* packages or a +cu
    # build, as PyPI's Linux wheel does), take PyTorch's CPU-only index instead.
    plan=$("$VPY" -m pip install --disable-pip-version-check --dry-run -q --report - "torch==$TORCH_VERSION" 2>/dev/null || true)
    cuda=$("$VPY" -c 'import json, sys
try:
    pkgs = [(p["metadata"]["name"], p["metadata"]["version"]) for p in json.load(sys.stdin)["install"]]
except Exception:
    print("unknown"); sys.exit()
print("yes" if any(n.startswith("nvidia-") or "+cu" in v for n, v in pkgs) else "no")' <<<"$plan")
    if [ "$cuda" = no ]; then
      pip_install "torch==$TORCH_VERSION"
    else
      pip_install "torch==$TORCH_VERSION" --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
    fi
    if "$VPY" -W ignore -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then :; else
      echo "[setup] warning: the installed torch is a CUDA build" >&2
    fi
  fi
fi
pip_install -e ".[test,examples]"
echo "[setup] ready: $("$VPY" -W ignore -c 'import torch, nni; print("torch", torch.__version__, "| nni", nni.__version__)')"
