#!/usr/bin/env bash
# The main job: set up, build, and print the groups of the example configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release >/dev/null
exec build/tools/rankmesh/rankmesh layout --world-size 16 --tp 8 --pp 2 --placement supernode "$@"
