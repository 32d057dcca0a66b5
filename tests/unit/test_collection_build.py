"""`ansible-galaxy collection build` produces an installable tarball without the test-only folders."""

import pathlib
import subprocess
import sys
import tarfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_collection_builds_without_tests(tmp_path):
    galaxy = pathlib.Path(sys.executable).parent / "ansible-galaxy"
    result = subprocess.run([str(galaxy), "collection", "build", "--output-path", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    tarball = tmp_path / "llmserve-k3s-0.1.0.tar.gz"
    with tarfile.open(tarball) as tar:
        tops = {name.split("/")[0] for name in tar.getnames()}
    assert {"plugins", "roles", "playbooks", "meta", "MANIFEST.json"} <= tops
    assert not tops & {"tests", "molecule", "benchmarks", ".venv", "build", ".git"}
