"""Every host-side download fails, when its source cannot be reached, with one message naming what, from where and
the offline way. Real ansible-playbook runs on localhost against 127.0.0.1: a closed port stands for a network that
does not reach GitHub / NVIDIA; a local HTTP server stands for a mirror. The download from a working mirror through
to the installed binary is converged on a real host in molecule/default. A model already in the cache is not
downloaded again, with no network at all.
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import yaml

from playbook import recap, run_playbook
from test_crds import closed_port, mirror

ROOT = pathlib.Path(__file__).resolve().parents[2]
K3S = yaml.safe_load((ROOT / "roles/k3s/defaults/main.yml").read_text())
VERSION = K3S["k3s_version"]


def _converge(tmp_path, role, tasks_from, extra, facts=None):
    """include_role ROLE tasks_from on localhost; facts replaces fact gathering."""
    book = tmp_path / "play.yml"
    include = {"ansible.builtin.include_role": {"name": "llmserve.k3s." + role, "tasks_from": tasks_from}}
    play = {"hosts": "localhost", "gather_facts": facts is None, "gather_subset": ["min"], "tasks": [include]}
    if facts is not None:
        include["vars"] = {"ansible_facts": facts}
    book.write_text(yaml.safe_dump([play]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    result = run_playbook(str(book), str(inventory), extra_vars=extra, timeout=300)
    return result, " ".join(result.stdout.split())


def _k3s_vars(tmp_path, base):
    return {"k3s_release_base_url": base, "k3s_install_dir": str(tmp_path / "bin")}


def test_k3s_sha256_list_unreachable_names_the_file_and_the_offline_ways(tmp_path):
    base = "http://127.0.0.1:%d/releases" % closed_port()
    (tmp_path / "bin").mkdir()
    result, out = _converge(tmp_path, "k3s", "install", _k3s_vars(tmp_path, base))
    assert result.returncode != 0
    assert "TASK [llmserve.k3s.k3s : Check that the release's sha256 list was downloaded]" in out, out[-3000:]
    url = "%s/%s/sha256sum-amd64.txt" % (base, VERSION.replace("+", "%2B"))
    assert "Downloading the sha256 list of k3s %s from %s failed:" % (VERSION, url) in out, out[-3000:]
    assert "Connection refused" in out
    assert "set k3s_airgap_dir to it, or set k3s_release_base_url to a mirror" in out
    assert "k3s-airgap-images-amd64.tar.zst" in out
    assert recap(result.stdout)["failed"] == 1
    assert not (tmp_path / "bin" / "k3s").exists()


def _release(tmp_path, binary=None):
    """A release folder as GitHub lays it out; binary=None leaves the binary out (a mirror missing it)."""
    folder = tmp_path / "mirror" / "releases" / VERSION
    folder.mkdir(parents=True)
    body = binary or b"#!/bin/sh\n"
    (folder / "sha256sum-amd64.txt").write_text("%s  k3s\n" % hashlib.sha256(body).hexdigest())
    if binary is not None:
        (folder / "k3s").write_bytes(body)
    return tmp_path / "mirror"


def test_k3s_binary_missing_on_the_mirror_names_the_binary(tmp_path):
    (tmp_path / "bin").mkdir()
    with mirror(_release(tmp_path)) as (base, _requested):
        result, out = _converge(tmp_path, "k3s", "install", dict(_k3s_vars(tmp_path, base + "/releases"), k3s_checksums={}))
    assert result.returncode != 0
    assert "TASK [llmserve.k3s.k3s : Stop - the k3s binary could not be downloaded]" in out, out[-3000:]
    assert "Downloading the k3s %s binary from %s/releases/%s/k3s failed:" % (VERSION, base, VERSION.replace("+", "%2B")) in out
    assert "HTTP Error 404" in out and "k3s_airgap_dir" in out
    assert not (tmp_path / "bin" / "k3s").exists()


def test_container_toolkit_repository_unreachable_names_it_and_the_mirror_variables(tmp_path):
    """On this Debian machine the role takes the apt path; its first download (the signing key) is refused."""
    base = "http://127.0.0.1:%d/libnvidia-container" % closed_port()
    extra = {"nvidia_container_toolkit_repo_url": base + "/stable", "nvidia_container_toolkit_gpgkey_url": base + "/gpgkey",
             "__nvidia_container_toolkit_keyring": str(tmp_path / "keyring.asc")}
    result, out = _converge(tmp_path, "nvidia_container_toolkit", "install", extra)
    assert result.returncode != 0
    assert "TASK [llmserve.k3s.nvidia_container_toolkit : Stop - the toolkit could not be installed from its repository]" in out
    assert ("Installing the NVIDIA container toolkit 1.19.0-1 from NVIDIA's repository %s/stable (signing key %s/gpgkey) "
            'failed at "Fetch the repository signing key (apt)"' % (base, base)) in out, out[-3000:]
    assert "Connection refused" in out
    assert "set nvidia_container_toolkit_repo_url and nvidia_container_toolkit_gpgkey_url to a mirror" in out
    assert not (tmp_path / "keyring.asc").exists()


def test_model_predownload_hub_unreachable_names_the_model_and_the_mirror_variable(tmp_path):
    """The real predownload tasks and script (huggingface_hub at the role's pin, from this machine's package index)
    against a closed port standing for the Hub; apt is not touched (os_family other than Debian)."""
    hub = "http://127.0.0.1:%d" % closed_port()
    extra = {"model_storage_path": str(tmp_path / "models"), "model_storage_venv": str(tmp_path / "hf-venv"),
             "model_storage_hf_endpoint": hub, "model_storage_hf_token": "hf_secret_token_value",
             "model_storage_plan": {"predownload": True, "errors": [],
                                    "models": [{"name": "qwen-0.5b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": None}]},
             "ansible_become_method": "su"}
    (tmp_path / "models" / ".llmserve" / "models").mkdir(parents=True)
    result, out = _converge(tmp_path, "model_storage", "predownload", extra, facts={"os_family": "NotDebian"})
    assert result.returncode != 0
    assert "TASK [llmserve.k3s.model_storage : Check that every model was downloaded]" in out, out[-3000:]
    assert ("qwen-0.5b: Downloading Qwen/Qwen2.5-0.5B-Instruct (revision main) for model qwen-0.5b from the Hugging Face "
            "Hub at %s failed: ConnectError:" % hub) in out, out[-3000:]
    assert "Connection refused" in out and "set model_storage_hf_endpoint to a reachable mirror" in out
    assert "hf_secret_token_value" not in out
    assert not (tmp_path / "models" / ".llmserve" / "models" / "qwen-0.5b.json").exists()


def test_model_predownload_keeps_a_complete_download_and_records_its_size(tmp_path):
    """A model whose marker names the same model and revision is not downloaded again (nothing is installed: the Hub
    stands at a closed port) and its marker's size becomes llmserve_model_sizes; a model without one would be."""
    extra = {"model_storage_path": str(tmp_path / "models"), "model_storage_venv": str(tmp_path / "hf-venv"),
             "model_storage_hf_endpoint": "http://127.0.0.1:%d" % closed_port(),
             "model_storage_plan": {"predownload": True, "errors": [],
                                    "models": [{"name": "qwen-0.5b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": None}]}}
    markers = tmp_path / "models" / ".llmserve" / "models"
    markers.mkdir(parents=True)
    (markers / "qwen-0.5b.json").write_text('{"name": "qwen-0.5b", "model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "main", '
                                            '"bytes": 988097824}')
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"ansible.builtin.include_role": {"name": "llmserve.k3s.model_storage", "tasks_from": "predownload"},
         "vars": {"ansible_facts": {"os_family": "NotDebian"}}},
        {"ansible.builtin.debug": {"msg": "sizes={{ llmserve_model_sizes | to_json }}"}}]}]))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    result = run_playbook(str(book), str(inventory), extra_vars=extra, timeout=300)
    out = " ".join(result.stdout.split())
    assert result.returncode == 0, out[-3000:]
    assert "In the cache: qwen-0.5b; to download: none." in out, out[-3000:]
    assert 'sizes={"qwen-0.5b": 988097824}' in out, out[-3000:]
    assert not (tmp_path / "hf-venv").exists()
