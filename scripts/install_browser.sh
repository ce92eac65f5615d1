#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for the browser tests (tests/integration/
# test_serve_page.py, the report screenshot). Does nothing where both are already there; where
# they cannot be installed (not root, no apt-get, no registry) it says so and exits 0, and the
# browser tests skip.
set -uo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_browser: not root or no apt-get: the browser tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
        echo "install_browser: apt-get could not install chromium: the browser tests will skip" >&2
fi
exit 0
