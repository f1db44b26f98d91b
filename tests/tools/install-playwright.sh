#!/usr/bin/env bash
# A real headless browser for tests/browser.sh (the fleet page, `GET /api/fleet`): Debian's Chromium (apt) driven
# by Playwright's `playwright-core` from npm, pinned, in target/tools/playwright. playwright-core downloads no
# browser of its own; the test hands it Debian's binary (`executablePath`), found here and written to
# target/tools/playwright/chromium-path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=1.65.1
dir="$tools/playwright"

need_command node nodejs
need_command npm npm
# Debian names the binary `chromium`; `--version` needs no display.
need_command chromium chromium

if [ "$(node -p "try { require('$dir/node_modules/playwright-core/package.json').version } catch { '' }" 2>/dev/null)" != "$version" ]; then
  echo "$installer: installing playwright-core@$version into $dir"
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name": "edgevault-browser-test", "private": true}' >"$dir/package.json"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: no browser build is fetched (playwright-core has no install hook today; this
  # keeps it so if one comes).
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-audit --no-fund --silent \
    "playwright-core@$version" || fail "\`npm install --prefix $dir playwright-core@$version\` failed (above); it needs the npm registry"
fi
type -P chromium >"$dir/chromium-path"
echo "playwright-core: $version in $dir (browser: $(cat "$dir/chromium-path"))"
