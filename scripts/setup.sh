#!/usr/bin/env bash
# Create .venv and install nni-diffusionnag.
#   bash scripts/setup.sh        what the main job needs (the package and its example extra)
#   bash scripts/setup.sh test   plus the test and benchmark extras, and the system packages two tests
#                                use (Debian's chromium for the browser test, openssh-server for the
#                                remote training-service test), installed with apt-get when missing
# Idempotent: a second run only checks. On a machine without an NVIDIA GPU it installs the CPU build
# of PyTorch and never a CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-main}
case "$MODE" in main|test) ;; *) echo "usage: bash scripts/setup.sh [test]" >&2; exit 2 ;; esac
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
if [ "$MODE" = test ]; then pip_install -e ".[test,examples,bench]"; else pip_install -e ".[examples]"; fi
echo "[setup] ready: $("$VPY" -W ignore -c 'import torch, nni; print("torch", torch.__version__, "| nni", nni.__version__)')"
[ "$MODE" = test ] || exit 0

# System packages for the browser and remote-training-service tests (Debian's chromium and
# openssh-server). Installed only when missing, as root, with apt-get; never fails the set-up
# (the tests skip, naming the missing binary).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "[setup] skipped: apt-get install ${missing[*]} (not root); the browser/remote tests will skip"
  elif ! command -v apt-get >/dev/null 2>&1; then
    echo "[setup] skipped: apt-get install ${missing[*]} (no apt-get); the browser/remote tests will skip"
  elif (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}") >/tmp/nni-diffusionnag-apt.log 2>&1; then
    echo "[setup] installed: ${missing[*]}"
  else
    echo "[setup] skipped: apt-get install ${missing[*]} failed (see /tmp/nni-diffusionnag-apt.log); the browser/remote tests will skip"
  fi
fi
