#!/usr/bin/env bash
# ansible-test sanity on the collection, offline.
# ansible-test needs the collection at ansible_collections/llmserve/k3s inside a git repository: a copy of the
# checkout's files is made in a temp folder. It fetches pip's bootstrap script from the internet, which is not
# reachable here: a stand-in that bootstraps pip from the standard library's ensurepip is put in its cache first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.venv/bin"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DEST="$WORK/ansible_collections/llmserve/k3s"
mkdir -p "$DEST"
# benchmarks/ is not part of the collection (build_ignore): it is left out like in the built tarball.
(cd "$ROOT" && git ls-files -co --exclude-standard -z -- . ':!benchmarks' | xargs -0 cp --parents -t "$DEST")
(cd "$DEST" && git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity)

pip_version=$(grep -ohP "pip='\K[0-9.]+" "$ROOT"/.venv/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
[ -s "$cache" ] || printf 'import ensurepip\nensurepip.bootstrap(upgrade=True)\n' > "$cache"

cd "$DEST"
"$BIN/ansible-test" sanity --python 3.11 --local --color no "$@"
