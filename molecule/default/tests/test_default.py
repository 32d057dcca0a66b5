"""What the host roles promise on a GPU-less Debian 12 systemd host (systemd-nspawn, over SSH).

Real: the host, systemd, SSH, the download from an HTTP server with its sha256 list, files, modes, units.
Not here: the k3s binary itself (a placeholder that prints its version stands in; k3s_start_service is false
because k3s cannot run in a container), a GPU and the NVIDIA driver (the GPU-less path is what converges).
"""

import hashlib
import urllib.request

import pytest
import yaml

from converge_helper import converge

VERSION = "v1.35.8+k3s1"
RELEASE = "http://127.0.0.1:8741/releases/" + VERSION


def test_k3s_binary_is_the_verified_release_artifact(host):
    binary = host.file("/usr/local/bin/k3s")
    assert binary.is_file and binary.user == "root" and binary.mode == 0o755
    served = urllib.request.urlopen(RELEASE + "/k3s", timeout=5).read()
    assert binary.sha256sum == hashlib.sha256(served).hexdigest()
    assert VERSION in host.check_output("/usr/local/bin/k3s --version")


@pytest.mark.parametrize("tool", ["kubectl", "crictl", "ctr"])
def test_tools_link_to_k3s(host, tool):
    link = host.file("/usr/local/bin/" + tool)
    assert link.is_symlink and link.linked_to == "/usr/local/bin/k3s"


def test_config_yaml(host):
    config = host.file("/etc/rancher/k3s/config.yaml")
    assert config.mode == 0o600 and config.user == "root"
    data = yaml.safe_load(config.content_string)
    assert data["write-kubeconfig-mode"] == "0600"
    assert data["tls-san"] == ["127.0.0.1", "k3s.example.internal"]
    assert data["node-name"] == "llmserve-mol-default"
    assert data["node-label"] == ["topology.kubernetes.io/zone=lab-1"]
    # GPU-less host: no GPU labels, no nvidia default runtime, no token file (the server makes its own token).
    assert not any(label.startswith("llmserve.io/gpu") for label in data["node-label"])
    assert "default-runtime" not in data and "token-file" not in data and "server" not in data


def test_unit_enabled_but_not_started(host):
    unit = host.file("/etc/systemd/system/k3s.service")
    assert "ExecStart=/usr/local/bin/k3s server --config /etc/rancher/k3s/config.yaml" in unit.content_string
    assert "Type=notify" in unit.content_string
    service = host.service("k3s")
    assert service.is_enabled and not service.is_running
    assert not host.file("/etc/systemd/system/k3s-agent.service").exists
    assert not host.file("/etc/rancher/k3s/registries.yaml").exists


def test_model_cache_folder(host):
    for path in ("/var/lib/llm-models", "/var/lib/llm-models/huggingface/hub", "/var/lib/llm-models/.llmserve/models"):
        folder = host.file(path)
        assert folder.is_directory and folder.user == "root" and folder.group == "root" and folder.mode == 0o755


def test_no_nvidia_pieces_without_a_gpu(host):
    assert not host.file("/etc/modprobe.d/llmserve-blacklist-nouveau.conf").exists
    assert not host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").exists
    assert not host.file("/etc/apt/sources.list.d/llmserve-nvidia-nonfree.sources").exists
    assert not host.package("nvidia-container-toolkit").is_installed


def test_gpu_on_the_pci_bus_takes_the_install_path(host):
    """A sysfs-like tree with an L40S (and its audio function, which is not a GPU) in --check mode.

    The driver install itself cannot run here; what is checked is that detection finds the GPU and the role goes
    down the Debian install path (non-free components) instead of skipping.
    """
    pci = "/tmp/fake-pci"
    for function, klass in (("0000:65:00.0", "0x030200"), ("0000:65:00.1", "0x040300")):
        dev = pci + "/" + function
        host.run_expect([0], "mkdir -p {0} && echo 0x10de > {0}/vendor && echo {1} > {0}/class"
                             " && echo 0x26b9 > {0}/device".format(dev, klass))
    _rc, out = converge({"nvidia_driver_pci_devices_path": pci}, tags="nvidia", check=True)
    flat = " ".join(out.split())
    assert "1 NVIDIA GPU(s) at 0000:65:00.0:" in flat, out[-3000:]
    assert "TASK [llmserve.k3s.nvidia_driver : Enable the non-free components]" in out
    assert not host.file("/etc/apt/sources.list.d/llmserve-nvidia-nonfree.sources").exists


def test_wrong_sha256_list_fails_and_keeps_the_binary(host):
    before = host.file("/usr/local/bin/k3s").sha256sum
    rc, out = converge({"k3s_release_base_url": "http://127.0.0.1:8741/bad-releases"}, tags="k3s")
    assert rc != 0, out[-3000:]
    assert "did not match" in out or "checksum" in out.lower(), out[-3000:]
    assert host.file("/usr/local/bin/k3s").sha256sum == before


def test_pin_disagreeing_with_the_release_list_fails(host):
    rc, out = converge({"k3s_checksums": {VERSION: {"amd64": "a" * 64}}}, tags="k3s")
    assert rc != 0
    assert "the pin in k3s_checksums is " + "a" * 64 in " ".join(out.split()), out[-3000:]


@pytest.mark.parametrize("extra, tag, message", [
    ({"k3s_disable": ["traefik", "ingress-nginx"]}, "k3s", 'k3s_disable has ["ingress-nginx"]'),
    ({"k3s_node_taints": ["gpu:Sometimes"]}, "k3s", "k3s_node_taints"),
    ({"model_storage_owner": "nobody-here"}, "storage", 'model_storage_owner "nobody-here"'),
    ({"nvidia_driver_branch": "latest"}, "nvidia", 'nvidia_driver_branch "latest"'),
])
def test_bad_input_fails_before_any_change(host, extra, tag, message):
    before = host.file("/etc/rancher/k3s/config.yaml").sha256sum
    rc, out = converge(extra, tags=tag)
    assert rc != 0
    assert message in " ".join(out.split()), out[-3000:]
    assert host.file("/etc/rancher/k3s/config.yaml").sha256sum == before
