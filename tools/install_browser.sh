#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the browser tests of the web pages (tests/_browser.py).
# Installs through apt when missing and when it can (root, apt-get present); otherwise says what is
# missing in one line and exits 0: the browser tests then skip with that reason (they fail under CI=true).
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tools/install_browser.sh: chromium or chromedriver missing and apt-get is not usable as this user;" \
       "install Debian's chromium and chromium-driver to run the browser tests"
  exit 0
fi
echo "Installing Debian's chromium and chromium-driver for the browser tests (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || echo "tools/install_browser.sh: apt-get update failed"
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
  || echo "tools/install_browser.sh: apt-get install chromium chromium-driver failed; the browser tests will say so"
exit 0
