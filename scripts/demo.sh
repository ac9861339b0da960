#!/usr/bin/env bash
# The demo: builds what it needs, then runs one whole session against a
# small sample repository served by a local git server, streaming Claude
# Code's work to the terminal. Uses the real Anthropic API when
# ANTHROPIC_API_KEY is set, the model double otherwise (and says so).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
build_workspace
CLAUDECLUSTER_TEST_IMAGE="$(build_image)"
export CLAUDECLUSTER_TEST_IMAGE
exec "$TARGET_DIR/debug/cc-demo"
