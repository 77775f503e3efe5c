#!/bin/sh
# Installs what the browser tests need: Debian's Chromium and its driver. Playwright's Python package comes
# from the lock; its own browser download is not used (it cannot be fetched here), it drives /usr/bin/chromium.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core
