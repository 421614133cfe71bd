#!/usr/bin/env bash
# Make sure Debian's Chromium and its chromedriver are installed: the review console's browser test
# (tests/web/test_end_to_end.py) drives them headless through Selenium, with no downloads of its own.
# It also installs axe-core (npm) into .browser-tools/ (git-ignored): the browser tests run it on
# every console page they visit.
set -euo pipefail

AXE_VERSION=4.14.1
TOOLS="$(cd "$(dirname "$0")/.." && pwd)/.browser-tools"
if [ ! -f "$TOOLS/node_modules/axe-core/axe.min.js" ]; then
  if command -v npm >/dev/null; then
    npm install --silent --no-save --no-audit --no-fund --prefix "$TOOLS" "axe-core@$AXE_VERSION" >/dev/null \
      || echo "ensure-chromium: npm could not install axe-core $AXE_VERSION; the browser tests need it" >&2
  else
    echo "ensure-chromium: npm is missing; install nodejs and npm to get axe-core for the browser tests" >&2
  fi
fi

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-chromium: chromium and chromium-driver are missing; install them as root:" >&2
  echo "  apt-get update && apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "ensure-chromium: installing chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
echo "ensure-chromium: $(chromium --version 2>/dev/null | head -1)"
