#!/usr/bin/env bash
# Rebuilds the dashboard's ui/dist/ (committed, embedded in the processor) from ui/src/ with the
# locked npm packages (installed by scripts/ui-test-deps.sh when missing). Run it after any
# change under ui/src/, then commit ui/dist/ with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ui-test-deps.sh
cd ui
node build.mjs "$@"
