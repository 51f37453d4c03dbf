#!/usr/bin/env bash
# Installs what the dashboard's build and end-to-end test need, each only when missing:
#   - the npm packages of ui/package-lock.json (esbuild, uPlot, playwright-core), with `npm ci`;
#   - with --browser, Debian's `chromium` (apt-get), which Playwright drives by its path.
# Node.js and npm come with the machine; nothing is downloaded outside the package registries
# (playwright-core never fetches a browser of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

browser=false
for arg in "$@"; do
  case "$arg" in
    --browser) browser=true ;;
    *) echo "ui-test-deps.sh: unknown argument $arg (expected --browser)" >&2; exit 2 ;;
  esac
done

# Node.js and npm: the machines' image has them; elsewhere Debian's packages do.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "ui-test-deps.sh: installing Node.js and npm (apt-get)" >&2
  apt_get=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if [[ $(id -u) -ne 0 ]]; then apt_get=(sudo "${apt_get[@]}"); fi
  "${apt_get[@]}" update >/dev/null
  "${apt_get[@]}" install --no-install-recommends nodejs npm >/dev/null
fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "ui-test-deps.sh: $tool is not installed" >&2; exit 1; }
done

# One install at a time (tests of several crates may call this script at once).
exec 9>ui/.deps.lock
flock 9

# npm packages: reinstalled when package-lock.json changed since the last install.
stamp=ui/node_modules/.dataflow-lock-sha256
want=$(sha256sum ui/package-lock.json | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "ui-test-deps.sh: npm ci in ui/" >&2
  (cd ui && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi

if $browser && ! command -v chromium >/dev/null; then
  echo "ui-test-deps.sh: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if [[ $(id -u) -ne 0 ]]; then apt_get=(sudo "${apt_get[@]}"); fi
  "${apt_get[@]}" update >/dev/null
  "${apt_get[@]}" install --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
