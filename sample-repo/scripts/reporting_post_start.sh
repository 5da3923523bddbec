#!/bin/sh
# Post-start script of reporting-dev: runs once the workspace is up.
set -eu
mkdir -p "$USER_CODE_PATH/reports"
echo "reporting-dev ready at $(date -u +%FT%TZ)" >> "$USER_CODE_PATH/reports/.started"
