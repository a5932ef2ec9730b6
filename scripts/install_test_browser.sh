#!/bin/sh
# Installs the headless Chromium the browser tests drive (tests/browser.py), from Debian/Ubuntu packages.
# Idempotent: does nothing when a Chromium is already on PATH. Needs root (or sudo) to install.
set -eu
for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "test browser present: $(command -v "$name")"
        exit 0
    fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
command -v chromium
