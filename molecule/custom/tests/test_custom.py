"""Non-default settings on a k3s server and an agent (two systemd-nspawn Debian 12 hosts, over SSH).

Real: the hosts, systemd units, the airgap copy checked against the sha256 list, token, registries.yaml, the
cache folder's owner and mode, the pre-download skip (playbooks/reset.yml: test_reset.py, run after these). Not here: k3s itself (placeholder
binary, k3s_start_service false), the Hugging Face Hub (the marker says the model is there already).
"""

import hashlib
import json
import os

import yaml

AIRGAP = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "www", "releases", "v1.35.8+k3s1")


def _is_server(host):
    return host.backend.get_hostname() == "llmserve-mol-server"


def test_airgap_binary_and_images(host):
    with open(os.path.join(AIRGAP, "k3s"), "rb") as handle:
        assert host.file("/usr/local/bin/k3s").sha256sum == hashlib.sha256(handle.read()).hexdigest()
    images = host.file("/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst")
    with open(os.path.join(AIRGAP, "k3s-airgap-images-amd64.tar.zst"), "rb") as handle:
        assert images.sha256sum == hashlib.sha256(handle.read()).hexdigest()


def test_server_and_agent_config(host):
    data = yaml.safe_load(host.file("/etc/rancher/k3s/config.yaml").content_string)
    assert data["token-file"] == "/etc/rancher/k3s/token"
    if _is_server(host):
        assert "server" not in data and data["disable"] == ["servicelb"]
        unit, other = "k3s", "k3s-agent"
    else:
        assert data["server"] == "https://127.0.0.1:6443"
        assert "tls-san" not in data and "disable" not in data and "write-kubeconfig-mode" not in data
        unit, other = "k3s-agent", "k3s"
    content = host.file("/etc/systemd/system/%s.service" % unit).content_string
    assert "ExecStart=/usr/local/bin/k3s %s --config" % ("server" if unit == "k3s" else "agent") in content
    assert host.service(unit).is_enabled and not host.file("/etc/systemd/system/%s.service" % other).exists


def test_token_file_is_private(host):
    token = host.file("/etc/rancher/k3s/token")
    assert token.mode == 0o600 and token.user == "root"
    assert token.content_string.strip() == "molecule-join-token"


def test_registries_yaml(host):
    registries = host.file("/etc/rancher/k3s/registries.yaml")
    assert registries.mode == 0o600
    assert yaml.safe_load(registries.content_string) == {
        "mirrors": {"docker.io": {"endpoint": ["https://registry.example.internal"]}}}


def test_cache_folder_owner_and_mode(host):
    for path in ("/srv/models", "/srv/models/huggingface/hub"):
        folder = host.file(path)
        assert folder.is_directory and folder.user == "llm" and folder.group == "llm" and folder.mode == 0o750
    assert not host.file("/var/lib/llm-models").exists


def test_predownload_skipped_when_the_marker_matches(host):
    """The marker has the catalog's model and revision: no venv, no download, the marker is untouched."""
    marker = json.loads(host.file("/srv/models/.llmserve/models/tiny-llama.json").content_string)
    assert marker["revision"] == "0123abc" and marker["bytes"] == 123456789
    assert not host.file("/opt/llmserve/hf-venv").exists
    assert not host.file("/srv/models/.llmserve/models/not-served.json").exists
