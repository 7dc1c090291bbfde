#!/usr/bin/env bash
# The npm that builds the wheel (hatch-jupyter-builder calls `<npm> install`, then `<npm> run build:prod`): an install
# is `npm ci`, which installs exactly package-lock.json and fails instead of rewriting it, so that building never
# modifies a tracked file.
set -euo pipefail
if [ "${1:-}" = "install" ]; then
    exec npm ci --no-audit --no-fund
fi
exec npm "$@"
