#!/usr/bin/env bash
# Run chapter notebooks under nbval in one profile, offline, and print the wall time.
#   bash tools/run_chapter.sh smoke notebooks/02_learning.ipynb [more.ipynb ...]
set -euo pipefail
profile=$1; shift
source tools/offline_env.sh
export DLBOOK_PROFILE="$profile"
start=$(date +%s)
.venv/bin/python -m pytest -q -p nbval_capture -p no:cacheprovider --nbval-lax --nbval-cell-timeout=1200 "$@"
echo "wall: $(( $(date +%s) - start )) s (profile $profile)"
