#!/usr/bin/env bash
# Throw-away Debian 12 systemd hosts for the molecule scenarios: systemd-nspawn containers booted from a cached
# debootstrap rootfs, reached over SSH on 127.0.0.1:<port>, stopped by process id.
#   nspawn-host.sh rootfs                               build ~/.cache/llmserve-tests/rootfs-bookworm if missing
#   nspawn-host.sh start NAME PORT STATE_DIR PUBKEY     copy the rootfs, boot it, wait until SSH and systemd are up
#   nspawn-host.sh stop NAME STATE_DIR                  stop by pid, remove the copy
#   nspawn-host.sh serve NAME DIR PORT STATE_DIR        python http.server on 127.0.0.1:PORT serving DIR
#   nspawn-host.sh unserve NAME STATE_DIR               stop it by pid
set -euo pipefail
CACHE=${LLMSERVE_TEST_CACHE:-$HOME/.cache/llmserve-tests}
ROOTFS=$CACHE/rootfs-bookworm
STAMP=.llmserve-rootfs-complete
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,openssh-server,ca-certificates

rootfs() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/rootfs.lock"
  flock -w 900 9
  if [ ! -e "$ROOTFS/$STAMP" ]; then
    rm -rf "$ROOTFS.tmp" "$ROOTFS"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS.tmp" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    touch "$ROOTFS.tmp/$STAMP"
    mv "$ROOTFS.tmp" "$ROOTFS"
  fi
  exec 9>&-  # the lock must not be inherited by the containers started next
}

start() {
  local name=$1 port=$2 state=$3 pubkey=$4 dir
  dir=$state/$name
  rootfs
  stop "$name" "$state" 2>/dev/null || true
  mkdir -p "$dir"
  cp -a --reflink=auto "$ROOTFS" "$dir/rootfs"
  local root=$dir/rootfs
  echo "$name" >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" >"$root/etc/hosts"
  install -d -m 0700 "$root/root/.ssh"
  install -m 0600 "$pubkey" "$root/root/.ssh/authorized_keys"
  printf 'Port %s\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nUseDNS no\n' "$port" \
    >"$root/etc/ssh/sshd_config.d/llmserve-test.conf"
  rm -f "$root/etc/machine-id" && systemd-machine-id-setup --root="$root" >/dev/null 2>&1 || true
  setsid systemd-nspawn -q -D "$root" --register=no --keep-unit -b -M "$name" \
    >"$dir/console.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  local key=${pubkey%.pub} state_now=""
  for _ in $(seq 1 90); do
    state_now=$(ssh -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=2 -o BatchMode=yes -o LogLevel=ERROR root@127.0.0.1 systemctl is-system-running 2>/dev/null || true)
    case $state_now in running|degraded) echo "$name: $state_now on 127.0.0.1:$port"; return 0 ;; esac
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "$name: nspawn exited"; tail -30 "$dir/console.log"; exit 1; }
    sleep 1
  done
  echo "$name: not up after 90 s (state: ${state_now:-no ssh})"; tail -30 "$dir/console.log"; exit 1
}

stop() {
  local name=$1 state=$2 dir pid
  dir=$state/$name
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" || true
    fi
    rm -f "$dir/pid"
  fi
  rm -rf "$dir"
}

serve() {
  local name=$1 root=$2 port=$3 state=$4
  unserve "$name" "$state" 2>/dev/null || true
  mkdir -p "$state"
  setsid python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root" >"$state/$name.http.log" 2>&1 </dev/null &
  echo $! >"$state/$name.http.pid"
  for _ in $(seq 1 20); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "http server on 127.0.0.1:$port did not answer"; exit 1
}

unserve() {
  local name=$1 state=$2 pid
  [ -f "$state/$name.http.pid" ] || return 0
  pid=$(cat "$state/$name.http.pid")
  kill "$pid" 2>/dev/null || true
  rm -f "$state/$name.http.pid"
}

cmd=$1; shift
"$cmd" "$@"
