#!/usr/bin/env bash
# Set up IHVC Studio: system libraries (EGL/Mesa for offscreen 3D, Xvfb, Qt's xcb deps)
# when running as root on Debian/Ubuntu, then a virtual environment .venv with the
# pinned Python requirements. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libegl1 libgl1-mesa-dri libgles2 xvfb xauth libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0
 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0
 libfontconfig1 libdbus-1-3 libglib2.0-0"
if command -v apt-get >/dev/null 2>&1; then
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "installing system packages: $(echo $missing)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
      echo "warning: missing system packages (run as root or: sudo apt-get install $(echo $missing))" >&2
    fi
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
