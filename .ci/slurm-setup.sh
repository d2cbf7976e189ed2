#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm + munge) for tests/workflow/test_slurm.py.
# Needs root and apt (Debian 12 / Ubuntu). Installs only: the test writes the config and starts
# and stops the daemons itself (tests/workflow/slurm_cluster.py). Called by .ci/run before pytest.
set -euo pipefail

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "slurm-setup: slurmctld, slurmd and munged already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-setup: needs root to apt-get install slurm-wlm munge; run it as root or skip the slurm tests (-m 'not slurm')" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Without systemd the postinst scripts only print 'policy-rc.d denied execution of start'; the
# daemons stay stopped until the test starts them.
apt-get install -y -qq slurm-wlm munge >/dev/null
echo "slurm-setup: installed $(dpkg-query -W -f='${Version}' slurm-wlm) slurm-wlm, $(dpkg-query -W -f='${Version}' munge) munge"
