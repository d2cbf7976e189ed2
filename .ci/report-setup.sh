#!/usr/bin/env bash
# Install Debian's Chromium for the headless check of the Snakemake report (tests/workflow/test_report.py).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
