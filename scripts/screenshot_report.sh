#!/usr/bin/env bash
# Render RUN_DIR/report.html with headless Chromium into a PNG (1280 x 2000 px; WINDOW=W,H
# for another size).
#
# Usage: scripts/screenshot_report.sh RUN_DIR OUT.png
#
# Chromium runs offline-friendly (no sync, updates or background networking) with a throw-away
# profile. The binary is `chromium` (or `chromium-browser`); set CHROMIUM to use another one.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 RUN_DIR OUT.png" >&2
    exit 2
fi
run_dir=$(realpath -- "$1")
out=$(realpath -m -- "$2")
report="$run_dir/report.html"
if [[ ! -f "$report" ]]; then
    echo "error: $report does not exist (run iqeclip's write_report first)" >&2
    exit 2
fi
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z "$browser" ]]; then
    echo "error: chromium is not installed (apt-get install -y chromium)" >&2
    exit 2
fi

# file:// URL with special characters percent-encoded (plain concatenation without python3)
url=$(python3 -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$report" 2>/dev/null ||
    echo "file://$report")

profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf -- "$profile" "$log"' EXIT
mkdir -p -- "$(dirname -- "$out")"
rm -f -- "$out"

timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --screenshot="$out" --window-size=${WINDOW:-1280,2000} \
    "$url" >"$log" 2>&1 || status=$?

if [[ ! -s "$out" ]]; then
    tail -n 20 -- "$log" >&2
    echo "error: chromium (exit ${status:-0}) wrote no screenshot to $out" >&2
    exit 1
fi
echo "$out"
