#!/usr/bin/env bash
# Every shell command the README and the chart's NOTES.txt show, checked without a cluster,
# Docker or cargo (part of `make test`; seconds once the tools are installed): heredocs that
# end, `bash -n`, a run with every external command recorded instead of run, `helm
# template` of every helm install with its arguments, and the images, files, make targets
# and crates those commands name. See scripts/deploy_checks/doc_commands.py.
#
# Installs its tools like scripts/check-deploy.sh (scripts/tools.sh). Environment:
# MERCATO_TOOLS_DIR (default .tools), HELM (a helm binary instead of the pinned one).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh

if ! ensure_tools; then
  say "check-docs: could not install the tools"
  exit 1
fi
say "check-docs: the commands of README.md and NOTES.txt"
exec "$TOOLS/venv/bin/python" "$CHECKS/doc_commands.py" --helm "${HELM:-$TOOLS/bin/helm}" README.md
