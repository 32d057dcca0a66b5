"""The host roles' per-distribution install data and the k3s config they compute, rendered by real Ansible.

The Ubuntu and RHEL driver paths cannot be converged here (no such host, no GPU); their package names, module
stream and holds are rendered from the roles' vars files and checked. The Debian path's data is checked too;
the GPU-less Debian converge itself is in molecule/default.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"


def _render(tmp_path, plays, inventory=None):
    """Run plays on localhost with the json callback; returns the debug msgs in order."""
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory or {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".venv" / "collections"))
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), str(book)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    return [json.loads(host["msg"]) for play in out["plays"] for task in play["tasks"]
            for host in task["hosts"].values() if "msg" in host]


def _driver_case(distro, branch="580", open_modules=True, server=True):
    return {"hosts": "localhost", "gather_facts": False,
            "vars": {"nvidia_driver_branch": branch, "nvidia_driver_open_kernel_modules": open_modules,
                     "nvidia_driver_ubuntu_server": server},
            "tasks": [{"ansible.builtin.include_vars": str(ROLES / "nvidia_driver" / "vars" / (distro + ".yml"))},
                      {"ansible.builtin.debug": {"msg": "{{ {'family': __nvidia_driver_family, "
                                                        "'packages': __nvidia_driver_packages, "
                                                        "'hold': __nvidia_driver_hold_packages, "
                                                        "'initramfs': __nvidia_driver_initramfs_command, "
                                                        "'extra': __nvidia_driver_module_stream"
                                                        " | default(__nvidia_driver_components | default(none))} | to_json }}"},
                       "vars": {"ansible_facts": {"kernel": "6.8.0-45-generic", "distribution": distro}}}]}


@pytest.fixture(scope="module")
def driver_data(tmp_path_factory):
    cases = [("Ubuntu", "580", True, True), ("Ubuntu", "570", False, True), ("Ubuntu", "580", True, False),
             ("Debian", "580", True, True), ("Debian", "580", False, True), ("RedHat", "580", True, True),
             ("RedHat", "575", False, True)]
    msgs = _render(tmp_path_factory.mktemp("driver"), [_driver_case(*case) for case in cases])
    return dict(zip(cases, msgs))


def test_ubuntu_server_open_packages(driver_data):
    data = driver_data[("Ubuntu", "580", True, True)]
    assert data["packages"] == ["nvidia-driver-580-server-open", "nvidia-utils-580-server", "linux-headers-6.8.0-45-generic"]
    assert "libnvidia-compute-580-server" in data["hold"] and "nvidia-driver-580-server-open" in data["hold"]
    assert data["initramfs"] == ["update-initramfs", "-u"]


def test_ubuntu_proprietary_and_desktop_flavours(driver_data):
    assert driver_data[("Ubuntu", "570", False, True)]["packages"][0] == "nvidia-driver-570-server"
    desktop = driver_data[("Ubuntu", "580", True, False)]
    assert desktop["packages"][:2] == ["nvidia-driver-580-open", "nvidia-utils-580"]


def test_debian_nonfree_dkms_and_headers(driver_data):
    data = driver_data[("Debian", "580", True, True)]
    assert data["extra"] == ["main", "contrib", "non-free", "non-free-firmware"]
    assert {"nvidia-driver", "dkms", "linux-headers-6.8.0-45-generic", "nvidia-open-kernel-dkms",
            "firmware-misc-nonfree", "nvidia-persistenced"} <= set(data["packages"])
    assert "nvidia-kernel-dkms" in driver_data[("Debian", "580", False, True)]["packages"]
    assert "nvidia-driver" in data["hold"] and "libcuda1" in data["hold"]


def test_rhel_module_stream_and_versionlock(driver_data):
    data = driver_data[("RedHat", "580", True, True)]
    assert data["family"] == "redhat"
    assert data["packages"] == ["@nvidia-driver:580-open"] and data["extra"] == "nvidia-driver:580-open"
    assert driver_data[("RedHat", "575", False, True)]["packages"] == ["@nvidia-driver:575-dkms"]
    assert "kmod-nvidia-open-dkms" in data["hold"] and data["initramfs"] == ["dracut", "--force"]


def _k3s_case(host):
    return {"hosts": host, "gather_facts": False, "tasks": [
        {"ansible.builtin.include_vars": str(ROLES / "k3s" / "defaults" / "main.yml")},
        {"ansible.builtin.include_vars": str(ROLES / "k3s" / "vars" / "main.yml")},
        {"ansible.builtin.set_fact": {"k3s_gpu_taint": True}},
        {"ansible.builtin.debug": {"msg": "{{ {'config': __k3s_config, 'service': __k3s_service} | to_json }}"},
         "vars": {"ansible_facts": {"nodename": host.upper(), "architecture": "x86_64"}}}]}


@pytest.fixture(scope="module")
def k3s_configs(tmp_path_factory):
    gpu_facts = {"count": 2, "driver_loaded": True, "gpus": [
        {"index": 0, "name": "NVIDIA L40S", "memory_total_mib": 46068},
        {"index": 1, "name": "NVIDIA L40S", "memory_total_mib": 46068}]}
    inventory = {"k3s_cluster": {"vars": {"ansible_connection": "local", "llmserve_k3s_token": "t0k3n",
                                          "llmserve_nvidia_default_runtime": True},
                                 "children": {
                                     "k3s_server": {"hosts": {"srv": {"ansible_host": "192.0.2.10",
                                                                      "llmserve_gpu_present": False}}},
                                     "k3s_agent": {"hosts": {"gpu1": {"llmserve_gpu_present": True,
                                                                      "llmserve_gpu_facts": gpu_facts}}}}}}
    msgs = _render(tmp_path_factory.mktemp("k3s"), [_k3s_case("srv"), _k3s_case("gpu1")], inventory)
    return dict(zip(["srv", "gpu1"], msgs))


def test_server_config(k3s_configs):
    srv = k3s_configs["srv"]
    assert srv["service"] == "k3s"
    config = srv["config"]
    assert config["write-kubeconfig-mode"] == "0600" and config["tls-san"] == ["192.0.2.10"]
    assert config["node-name"] == "srv" and config["token-file"] == "/etc/rancher/k3s/token"
    # No GPU on the server: no GPU labels, taint or nvidia default runtime.
    assert "node-label" not in config and "node-taint" not in config and "default-runtime" not in config


def test_gpu_agent_config(k3s_configs):
    agent = k3s_configs["gpu1"]
    assert agent["service"] == "k3s-agent"
    config = agent["config"]
    assert config["server"] == "https://192.0.2.10:6443"
    assert sorted(config["node-label"]) == ["llmserve.io/gpu-product=NVIDIA-L40S", "llmserve.io/gpu=true"]
    assert config["node-taint"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert config["default-runtime"] == "nvidia"
    assert "tls-san" not in config and "write-kubeconfig-mode" not in config


def test_argument_specs_match_defaults():
    for role in ("nvidia_driver", "nvidia_container_toolkit", "k3s", "model_storage"):
        defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
        specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        assert set(specs["main"]["options"]) == set(defaults), role
