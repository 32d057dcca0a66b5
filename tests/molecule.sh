#!/usr/bin/env bash
# Runs every molecule scenario's full test sequence (syntax, create, check, converge, idempotence, verify,
# destroy) against systemd-nspawn Debian 12 hosts. Installs debootstrap and systemd-container when missing;
# the rootfs is cached in ~/.cache/llmserve-tests/rootfs-bookworm (rebuilt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.venv/collections"
export ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 PY_COLORS=0

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
molecule/resources/nspawn-host.sh rootfs

scenarios=${MOLECULE_SCENARIOS:-$(cd molecule && ls -d */ | tr -d / | grep -v '^resources$')}
for scenario in $scenarios; do
  echo "== molecule test -s $scenario"
  start=$(date +%s)
  molecule test -s "$scenario"
  echo "== $scenario: $(( $(date +%s) - start )) s"
done
