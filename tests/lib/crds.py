"""The upstream CRD files the render tests validate custom resources against: where they come from.

In order: the folder named by LLMSERVE_CRDS_DIR; `../shared/crds` beside the checkout; else the test cache
(LLMSERVE_TEST_CACHE, default ~/.cache/llmserve-tests), filled from the upstream files pinned in CRDS below by
release tag (or commit) and sha256. Every file is checked against its sha256 wherever it comes from. When none of
the three works, CrdsUnavailable carries the one message that says what to set.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
# LLMSERVE_CRDS_BASE_URL replaces it (a mirror of raw.githubusercontent.com: BASE/owner/repo/ref/path).
BASE_URL = "https://raw.githubusercontent.com"
TIMEOUT_S = 20

Crd = collections.namedtuple("Crd", "name repo ref path sha256")
# Traefik: no v3.7.x tag carries this revision (it adds peerCertSANs); pinned at the master commit that merged the
# v3.7 branch on 2026-07-10. prometheus-operator v0.93.0 and helm-controller v0.17.7 are release tags.
_TRAEFIK = ("traefik/traefik", "90164283504bd793bf4d45d1577fbf6fe04c23af")
_PROM = ("prometheus-operator/prometheus-operator", "v0.93.0")
_HELM = ("k3s-io/helm-controller", "v0.17.7")
CRDS = (
    Crd("traefik.io_crds_v3.7.yaml", *_TRAEFIK, "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml",
        "a145b37eb46b11f83f1c26663d95049e09652f5f61395c00ee3a4f99b49b3306"),
    Crd("monitoring.coreos.com_podmonitors.yaml", *_PROM, "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
        "45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d"),
    Crd("monitoring.coreos.com_servicemonitors.yaml", *_PROM,
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
        "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32"),
    Crd("monitoring.coreos.com_prometheusrules.yaml", *_PROM,
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        "78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d"),
    Crd("helm.cattle.io_helmcharts.yaml", *_HELM, "pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml",
        "7027751a0e57272a24efe0cda3c9f4579d38bd3a9f1f79b97437ae16e849d62b"),
    Crd("helm.cattle.io_helmchartconfigs.yaml", *_HELM, "pkg/crds/yaml/generated/helm.cattle.io_helmchartconfigs.yaml",
        "1dbc3601e166895d8c1c9a5b38ab3ce42f971eaf7bac12bf31402ce3e2f9ff78"),
)


class CrdsUnavailable(Exception):
    """No source of the pinned CRD files works; str() is the whole message for the user."""


class Unreachable(CrdsUnavailable):
    """A download failed before any byte came back (no route, refused, name not resolved, timeout)."""

    def __init__(self, source, reason):
        super().__init__("downloading %s failed (%s)" % (source, reason))
        self.source, self.reason = source, reason


def url(crd, base_url=BASE_URL):
    return "%s/%s/%s/%s" % (base_url.rstrip("/"), crd.repo, crd.ref, crd.path)


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _check_folder(folder, crds, origin):
    """Raise CrdsUnavailable unless folder holds every pinned file with its pinned sha256."""
    problems = []
    for crd in crds:
        path = folder / crd.name
        if not path.is_file():
            problems.append("%s is missing" % crd.name)
        elif _sha256(path) != crd.sha256:
            problems.append("%s has sha256 %s, pinned %s" % (crd.name, _sha256(path), crd.sha256))
    if problems:
        raise CrdsUnavailable("The CRD files in %s (%s) are not the pinned ones: %s. Point LLMSERVE_CRDS_DIR at a folder "
                              "holding the files of tests/lib/crds.py (CRDS), or unset it." % (folder, origin, "; ".join(problems)))
    return folder


def download(crds, cache, base_url=BASE_URL, timeout=TIMEOUT_S):
    """Fetch the files missing or wrong in cache, verify each sha256 before it lands; stop at the first failure."""
    cache.mkdir(parents=True, exist_ok=True)
    for crd in crds:
        dest = cache / crd.name
        if dest.is_file() and _sha256(dest) == crd.sha256:
            continue
        source = url(crd, base_url)
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:  # noqa: S310 (pinned https or a mirror)
                body = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Unreachable(source, getattr(exc, "reason", exc)) from exc
        digest = hashlib.sha256(body).hexdigest()
        if digest != crd.sha256:
            raise CrdsUnavailable("Downloaded %s from %s but its sha256 is %s, pinned %s (tests/lib/crds.py): nothing was "
                                  "kept. A mirror (LLMSERVE_CRDS_BASE_URL) must serve the upstream files unchanged."
                                  % (crd.name, source, digest, crd.sha256))
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".part-", delete=False) as part:
            part.write(body)
        os.replace(part.name, dest)
    return cache


def _none_found(shared, failed, cache):
    return ("The render tests need the upstream CRD files (Traefik, prometheus-operator, k3s helm-controller) and found "
            "none: LLMSERVE_CRDS_DIR is not set, %s does not exist, and %s. Set LLMSERVE_CRDS_DIR "
            "to a folder holding the files listed in tests/lib/crds.py (CRDS, pinned by sha256), put them in %s, or set "
            "LLMSERVE_CRDS_BASE_URL to a reachable mirror of raw.githubusercontent.com."
            % (shared, failed, cache))


def resolve(env=None, root=ROOT, crds=CRDS):
    """The folder holding every pinned CRD file, after the lookup order of the module docstring."""
    env = os.environ if env is None else env
    if env.get("LLMSERVE_CRDS_DIR"):
        return _check_folder(pathlib.Path(env["LLMSERVE_CRDS_DIR"]), crds, "LLMSERVE_CRDS_DIR")
    shared = root.parent / "shared" / "crds"
    if shared.is_dir():
        return _check_folder(shared, crds, "../shared/crds beside the checkout")
    cache = pathlib.Path(env.get("LLMSERVE_TEST_CACHE") or pathlib.Path.home() / ".cache" / "llmserve-tests") / "crds"
    try:
        return download(crds, cache, env.get("LLMSERVE_CRDS_BASE_URL") or BASE_URL)
    except Unreachable as exc:
        raise CrdsUnavailable(_none_found(shared, exc, cache)) from exc


@functools.lru_cache(maxsize=None)
def crd_files():
    """Paths of the pinned CRD files, resolved once per process."""
    folder = resolve()
    return tuple(folder / crd.name for crd in CRDS)


if __name__ == "__main__":
    print(resolve())
