#!/usr/bin/env bash
# Installs streamseg into ./.venv (editable), ready to run:
#   bash scripts/install.sh           the engine: torch, sam2, ultralytics, PyAV, ONNX Runtime, ...;
#                                     the CUDA mask kernels are compiled wherever nvcc is found
#   bash scripts/install.sh --test    also what the tests use: pytest, TrackEval, selenium, Ray, and (root,
#                                     Debian/Ubuntu) GStreamer's RTSP server, Chromium and the Mosquitto
#                                     MQTT broker from apt
# Environment:
#   PYTHON       the interpreter for the venv (default python3; 3.10 or newer)
#   TORCH_SPEC   torch and torchvision to install (default pins the builds that lie on this
#                workplace's disk; elsewhere pip downloads them)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

if [ "$with_tests" = 1 ]; then
  pkgs="gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base
        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad chromium chromium-driver mosquitto"
  # shellcheck disable=SC2086
  if ! dpkg -s $pkgs >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "install.sh: apt packages for the RTSP server, browser and MQTT tests" >&2
      apt-get update -qq
      # shellcheck disable=SC2086
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    else
      echo "install.sh: the tests need these Debian packages; install them as root:" >&2
      echo "  apt-get install $pkgs" >&2
      exit 1
    fi
  fi
fi

# pip warns about every configured index folder that lacks a package (this workplace's pip.conf has
# many); those lines are dropped, everything else pip says is kept.
quiet_pip() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(quiet_pip .venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and pinned: anything installed later that asks for torch must not pull another build.
# shellcheck disable=SC2086
"${pip[@]}" ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
"${pip[@]}" "scikit-build-core>=0.10" "setuptools>=61" wheel
# --no-build-isolation: sam2's build imports torch, and an isolated build would download a second one.
# SAM2_BUILD_CUDA=0: sam2's optional CUDA extension only fills mask holes; the engine does not use it.
extra=""
[ "$with_tests" = 1 ] && extra="[test]"
SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation -e ".${extra}"
.venv/bin/streamseg info | sed -n '/^device/,$p'
