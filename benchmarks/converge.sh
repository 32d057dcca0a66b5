#!/usr/bin/env bash
# Wall time of a first converge of playbooks/host.yml on a fresh GPU-less Debian 12 systemd host
# (systemd-nspawn, over SSH) and of a no-op re-run, with the number of tasks each ran. Target: no-op < 30 s.
# k3s comes from a placeholder release on a local HTTP server (k3s cannot run here), as in molecule/default.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/.venv/collections" ANSIBLE_CONFIG="$ROOT/ansible.cfg"
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1
SSH_PORT=${BENCH_SSH_PORT:-2261}
HTTP_PORT=${BENCH_HTTP_PORT:-8761}
VERSION=v1.35.8+k3s1
NSPAWN=molecule/resources/nspawn-host.sh
WORK=$(mktemp -d /tmp/llmserve-bench.XXXXXX)
cleanup() {
  "$NSPAWN" stop llmserve-bench "$WORK/hosts" || true
  "$NSPAWN" unserve bench "$WORK" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null \
  || { echo "needs systemd-container and debootstrap (tests/molecule.sh installs them)"; exit 1; }
"$NSPAWN" rootfs
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id"
mkdir -p "$WORK/www/releases/$VERSION"
printf '#!/bin/sh\necho "k3s version %s (placeholder)"\n' "$VERSION" >"$WORK/www/releases/$VERSION/k3s"
(cd "$WORK/www/releases/$VERSION" && sha256sum k3s >sha256sum-amd64.txt)
"$NSPAWN" serve bench "$WORK/www" "$HTTP_PORT" "$WORK" >/dev/null
"$NSPAWN" start llmserve-bench "$SSH_PORT" "$WORK/hosts" "$WORK/id.pub" >/dev/null

cat >"$WORK/inventory.yml" <<YAML
k3s_cluster:
  children:
    k3s_server:
      hosts:
        llmserve-bench:
          ansible_host: 127.0.0.1
          ansible_port: $SSH_PORT
          ansible_user: root
          ansible_private_key_file: $WORK/id
  vars:
    llmserve_gpu_count: 0
    llmserve_kubeconfig: $WORK/kubeconfig
    k3s_release_base_url: http://127.0.0.1:$HTTP_PORT/releases
    k3s_checksums: {}
    k3s_start_service: false
YAML

run() {
  local label=$1 start end out
  start=$(date +%s%N)
  out=$(ansible-playbook -i "$WORK/inventory.yml" playbooks/host.yml 2>&1) || { echo "$out" | tail -30; exit 1; }
  end=$(date +%s%N)
  # PLAY RECAP: ok counts the changed tasks too; tasks run = ok + failed.
  echo "$out" | awk -v label="$label" -v secs="$(( (end - start) / 1000000 ))" '
    /^llmserve-bench/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] } }
    END { printf "%-16s %6.1f s   tasks run %3d   changed %3d   skipped %3d\n", label, secs / 1000, r["ok"] + r["failed"], r["changed"], r["skipped"] }'
}
echo "host.yml on a fresh nspawn Debian 12 host (GPU-less, k3s from a local placeholder release)"
run "first converge"
run "no-op re-run"
