# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download one model into the shared Hugging Face hub cache and record what it took.

The marker JSON (model, revision, resolved commit, bytes, files) is written only after a complete download,
so its presence with the same model and revision means the cache already holds that snapshot. The token is
read from HF_TOKEN in the environment, never from the command line; the Hub (or a mirror) from HF_ENDPOINT.
When the Hub cannot be reached the script exits 2 with one line saying what it fetched, from where, and the
offline ways; that line never holds the token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def measure(snapshot_dir):
    """(bytes, files) of a snapshot folder, following the hub cache's symlinks into blobs/."""
    total = files = 0
    for root, _dirs, names in os.walk(snapshot_dir):
        for name in names:
            total += os.stat(os.path.join(root, name)).st_size
            files += 1
    return total, files


def write_marker(path, record):
    """Atomic write: a reader sees the old marker or the complete new one."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".marker-")
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


UNREACHABLE = 2


def unreachable(exc):
    """The first connection-level error in exc's chain (the hub wraps it in LocalEntryNotFoundError), else None."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in ("ConnectError", "ConnectTimeout"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def offline_message(args, endpoint, error):
    return ("Downloading %s (revision %s) for model %s from the Hugging Face Hub at %s failed: %s: %s. Without access to "
            "that host: set model_storage_hf_endpoint to a reachable mirror of the Hub, or set llmserve_models_predownload: "
            "false and provide the weights another way (the pods read %s)."
            % (args.model, args.revision, args.name, endpoint, type(error).__name__, error, args.cache_dir))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--revision", default="main")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--marker", required=True)
    # A LoRA adapter: its files in a folder of its own under the cache, the path vLLM's --lora-modules names.
    parser.add_argument("--local-dir", default=None)
    args = parser.parse_args(argv)

    from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel

    started = time.time()
    try:
        snapshot = snapshot_download(repo_id=args.model, revision=args.revision, cache_dir=args.cache_dir,
                                     token=os.environ.get("HF_TOKEN") or None,
                                     **({"local_dir": args.local_dir} if args.local_dir else {}))
    except Exception as exc:  # pylint: disable=broad-exception-caught  # re-raised unless it is a connection failure
        error = unreachable(exc)
        if error is None:
            raise
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        print(offline_message(args, endpoint, error), file=sys.stderr)
        return UNREACHABLE
    size, files = measure(snapshot)
    write_marker(args.marker, {
        "name": args.name, "model": args.model, "revision": args.revision,
        "commit": os.path.basename(snapshot.rstrip("/")), "bytes": size, "files": files,
        "seconds": round(time.time() - started, 1), "completed_at": int(time.time()),
    })
    print(json.dumps({"name": args.name, "bytes": size, "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
