#!/usr/bin/env bash
# The main job: set up, build, and run the pipeline example (tp 2 x pp 2, four ranks in one
# process). Extra arguments go to rankmesh-pipeline (--tp, --pp, --microbatches, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release >/dev/null
exec build/examples/pipeline/rankmesh-pipeline "$@"
