#!/usr/bin/env bash
# Render a mobilize bench report.html in headless Chromium and save a PNG screenshot, to check that the page and its
# inline SVG charts render in a real browser (offline: the page has no external references).
#
#   benchmarks/render_html.sh BUNDLE/report.html [out.png] [width] [height]
#
# Needs chromium (Debian/Ubuntu: apt-get install -y chromium). Exits 3 when no Chromium is found.
set -euo pipefail
html=${1:?usage: benchmarks/render_html.sh report.html [out.png] [width] [height]}
out=${2:-${html%.html}.png}
width=${3:-1400}
height=${4:-1800}
browser=""
for b in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser "$(command -v chromium || true)" \
         "$(command -v chromium-browser || true)" "$(command -v google-chrome || true)"; do
  if [[ -n "$b" && -x "$b" ]]; then browser=$b; break; fi
done
if [[ -z "$browser" ]]; then
  echo "render_html.sh: no chromium found (install it, or set CHROMIUM=/path/to/chrome)" >&2
  exit 3
fi
abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: needed when running as root in containers; the page is local and has no scripts.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${width},${height}" --screenshot="$out_abs" "file://$abs" >/dev/null 2>&1
test -s "$out_abs"
echo "$out_abs"
