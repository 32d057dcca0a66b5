"""nvidia_gpu_info's logic on real nvidia-smi output (tests/unit/fixtures/nvidia_smi/README.md names each source).

No NVIDIA GPU and no NVIDIA driver are available where these tests run: nvidia-smi's output is replayed from
recordings of real hosts, and the PCI bus is a fake sysfs tree built in a temporary folder.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _nvidia_smi as smi

FIX = pathlib.Path(__file__).parent / "fixtures" / "nvidia_smi"


def fixture(name):
    return (FIX / name).read_text()


def make_pci(root, devices):
    """devices: (address, vendor, device, class, driver or None)."""
    for address, vendor, device, klass, driver in devices:
        base = root / address
        base.mkdir(parents=True)
        (base / "vendor").write_text(vendor + "\n")
        (base / "device").write_text(device + "\n")
        (base / "class").write_text(klass + "\n")
        if driver:
            target = root.parent / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            os.symlink(str(target), str(base / "driver"))
    return str(root)


# The workstation without a working driver: 2 L40 (3D controllers) with their audio functions, and the BMC's VGA.
WORKSTATION_PCI = [
    ("0000:01:00.0", "0x10de", "0x26b5", "0x030200", None),
    ("0000:01:00.1", "0x10de", "0x22ba", "0x040300", "snd_hda_intel"),
    ("0000:41:00.0", "0x10de", "0x26b5", "0x030200", "nouveau"),
    ("0000:03:00.0", "0x1a03", "0x2000", "0x030000", "ast"),
    ("0000:00:14.0", "0x8086", "0x7ae0", "0x0c0330", "xhci_hcd"),
]


def replay(responses, calls=None):
    """A stand-in for module.run_command answering each nvidia-smi invocation from a recording."""
    def run(args):
        if calls is not None:
            calls.append(args)
        for key, answer in responses.items():
            if key in " ".join(args):
                return answer
        return 1, "", "unexpected call %r" % (args,)
    return run


@pytest.mark.parametrize("name, expected", [
    ("l40s_595.80_query_gpu_all.csv", [dict(index=0, name="NVIDIA L40S", memory_total_mib=46068, memory_used_mib=0,
                                            driver_version="595.80", compute_capability="8.9", pci_bus_id="0000:01:00.0",
                                            mig_mode=None, persistence_mode="Disabled",
                                            uuid="GPU-00000000-0000-0000-0000-000000000000")]),
    ("h100_mig_590.48.01_query_gpu_all.csv", [dict(index=0, name="NVIDIA H100 80GB HBM3", memory_total_mib=81559,
                                                   memory_used_mib=59, driver_version="590.48.01", compute_capability="9.0",
                                                   pci_bus_id="0000:00:09.0", mig_mode="Enabled", persistence_mode="Enabled")]),
    ("l40s_2x_595.71.05_query_subset.csv", [dict(index=0, name="NVIDIA L40S", memory_total_mib=46068, pci_bus_id="0000:01:00.0",
                                                 compute_capability=None),
                                            dict(index=1, name="NVIDIA L40S", memory_total_mib=46068, pci_bus_id="0000:91:00.0")]),
])
def test_query_csv_of_real_hosts(name, expected):
    gpus = smi.parse_query_csv(fixture(name))
    assert len(gpus) == len(expected)
    for gpu, want in zip(gpus, expected):
        for key, value in want.items():
            assert gpu[key] == value, (name, key)


def test_query_csv_nounits_noheader_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="header"):
        smi.parse_query_csv("0, NVIDIA L40S, 46068\n")


def test_query_xml_of_a_mig_a100():
    parsed = smi.parse_query_xml(fixture("a100_sxm4_40gb_mig_510.47.03.xml"))
    assert parsed["driver_version"] == "510.47.03" and parsed["cuda_version"] == "11.6"
    (gpu,) = parsed["gpus"]
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB" and gpu["memory_total_mib"] == 40960 and gpu["memory_used_mib"] == 38
    assert gpu["pci_bus_id"] == "0000:00:04.0" and gpu["uuid"] == "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a"
    assert gpu["mig_mode"] == "Enabled" and gpu["persistence_mode"] == "Disabled"
    assert [(m["gpu_instance_id"], m["memory_total_mib"], m["multiprocessor_count"]) for m in gpu["mig_devices"]] == [
        (1, 19968, 42), (2, 19968, 42)]


def test_query_xml_refuses_what_is_not_nvidia_smi():
    with pytest.raises(ValueError):
        smi.parse_query_xml("Failed to initialize NVML: Driver/library version mismatch")


@pytest.mark.parametrize("name, status", [
    ("driver_mismatch.txt", "driver_mismatch"),
    ("driver_mismatch_nvml_570.txt", "driver_mismatch"),
    ("driver_not_loaded.txt", "driver_not_loaded"),
])
def test_failures_are_told_apart(name, status):
    got, msg = smi.classify_failure(18 if status == "driver_mismatch" else 9, fixture(name))
    assert got == status
    assert "Fix:" in msg


def test_pci_scan_keeps_nvidia_display_controllers_only(tmp_path):
    root = make_pci(tmp_path / "devices", WORKSTATION_PCI)
    devices = smi.scan_pci(root)
    assert [(d["pci_bus_id"], d["name"], d["kernel_driver"]) for d in devices] == [
        ("0000:01:00.0", "NVIDIA L40", None), ("0000:41:00.0", "NVIDIA L40", "nouveau")]


def test_gather_ok_from_csv_and_xml(tmp_path):
    """A driver that answers: GPUs from the CSV, CUDA version and MIG instances from the XML of the same host."""
    calls = []
    run = replay({"--query-gpu": (0, fixture("l40s_2x_595.71.05_query_subset.csv"), ""),
                  "-q -x": (0, "", "")}, calls)
    facts = smi.gather(run, lambda: "/usr/bin/nvidia-smi", str(tmp_path / "none"))
    assert facts["status"] == "ok" and facts["driver_loaded"] is True
    assert facts["count"] == 2 and facts["driver_version"] == "595.71.05"
    assert facts["gpus"][1]["memory_total_mib"] == 46068
    assert "2x NVIDIA L40S" in facts["msg"]
    assert calls[0][0] == "/usr/bin/nvidia-smi" and calls[0][1].startswith("--query-gpu=index,name,uuid,memory.total")


def test_gather_merges_mig_instances_from_the_xml(tmp_path):
    xml = fixture("a100_sxm4_40gb_mig_510.47.03.xml")
    gpus = smi.parse_query_xml(xml)["gpus"]
    csv_text = "index, name, uuid, memory.total [MiB], pci.bus_id\n0, %s, %s, %d, 00000000:00:04.0\n" % (
        gpus[0]["name"], gpus[0]["uuid"], gpus[0]["memory_total_mib"])
    facts = smi.gather(replay({"--query-gpu": (0, csv_text, ""), "-q -x": (0, xml, "")}), lambda: "nvidia-smi", str(tmp_path))
    assert facts["cuda_version"] == "11.6"
    assert len(facts["gpus"][0]["mig_devices"]) == 2 and facts["gpus"][0]["mig_mode"] == "Enabled"


def test_gather_driver_mismatch_still_lists_the_pci_gpus(tmp_path):
    root = make_pci(tmp_path / "devices", WORKSTATION_PCI)
    run = replay({"--query-gpu": (18, fixture("driver_mismatch_nvml_570.txt"), "")})
    facts = smi.gather(run, lambda: "/usr/bin/nvidia-smi", root)
    assert facts["status"] == "driver_mismatch" and facts["driver_loaded"] is False
    assert facts["count"] == 2 and [g["name"] for g in facts["gpus"]] == ["NVIDIA L40", "NVIDIA L40"]
    assert facts["gpus"][0]["memory_total_mib"] is None
    assert "reboot" in facts["msg"]


def test_gather_driver_not_loaded(tmp_path):
    root = make_pci(tmp_path / "devices", WORKSTATION_PCI)
    facts = smi.gather(replay({"--query-gpu": (9, fixture("driver_not_loaded.txt"), "")}), lambda: "nvidia-smi", root)
    assert facts["status"] == "driver_not_loaded" and facts["count"] == 2


def test_gather_gpu_without_driver_installed(tmp_path):
    root = make_pci(tmp_path / "devices", WORKSTATION_PCI)
    facts = smi.gather(replay({}), lambda: None, root)
    assert facts["status"] == "nvidia_smi_missing" and facts["count"] == 2 and facts["driver_loaded"] is False
    assert "NVIDIA L40" in facts["msg"] and "nvidia_driver" in facts["msg"]


def test_gather_no_gpu_at_all(tmp_path):
    root = make_pci(tmp_path / "devices", [d for d in WORKSTATION_PCI if d[1] != "0x10de"])
    facts = smi.gather(replay({}), lambda: None, root)
    assert facts["status"] == "no_gpu" and facts["count"] == 0 and facts["gpus"] == [] and facts["pci_devices"] == []


def test_gather_retries_without_compute_cap_on_old_drivers(tmp_path):
    """Drivers older than compute_cap refuse the whole query; the second query leaves the field out."""
    calls = []
    answers = iter([(2, 'Field "compute_cap" is not a valid field to query.', ""),
                    (0, fixture("l40s_2x_595.71.05_query_subset.csv"), ""), (1, "", "")])
    facts = smi.gather(lambda args: calls.append(args) or next(answers), lambda: "nvidia-smi", str(tmp_path))
    assert facts["status"] == "ok" and "compute_cap" not in calls[1][1]


def test_facts_feed_the_gpu_nodes_filter(tmp_path):
    from ansible_collections.llmserve.k3s.plugins.filter.llmserve import gpu_nodes
    ok = smi.gather(replay({"--query-gpu": (0, fixture("l40s_2x_595.71.05_query_subset.csv"), ""), "-q -x": (1, "", "")}),
                    lambda: "nvidia-smi", str(tmp_path))
    broken = smi.gather(replay({}), lambda: None, make_pci(tmp_path / "devices", WORKSTATION_PCI))
    hostvars = {"a": {"llmserve_gpu_facts": ok}, "b": {"llmserve_gpu_facts": broken, "llmserve_gpu_memory_gib": 44.99}}
    nodes = {n["name"]: n for n in gpu_nodes(["a", "b"], hostvars)}
    assert (nodes["a"]["gpu_count"], nodes["a"]["gpu_name"], nodes["a"]["gpu_memory_gib"]) == (2, "NVIDIA L40S", 44.99)
    assert (nodes["b"]["gpu_count"], nodes["b"]["gpu_name"], nodes["b"]["gpu_memory_gib"]) == (2, "NVIDIA L40", 44.99)


def test_module_through_ansible(tmp_path):
    """The module run by the real ansible: a stand-in nvidia-smi replays the recorded L40S answer, sysfs is fake."""
    import json
    import subprocess
    import sys

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\ncase \"$*\" in *--query-gpu*) cat '%s';; *) echo 'not recorded' >&2; exit 1;; esac\n"
                    % (FIX / "l40s_2x_595.71.05_query_subset.csv"))
    fake.chmod(0o755)
    root = make_pci(tmp_path / "devices", WORKSTATION_PCI)
    ansible = pathlib.Path(sys.executable).parent / "ansible"
    out = subprocess.run([str(ansible), "localhost", "-m", "llmserve.k3s.nvidia_gpu_info",
                          "-a", "nvidia_smi_path=%s pci_path=%s require=driver" % (fake, root)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json"))
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    facts = result["ansible_facts"]["llmserve_gpu_facts"]
    assert result["changed"] is False and facts["status"] == "ok" and facts["count"] == 2
    assert [d["pci_bus_id"] for d in facts["pci_devices"]] == ["0000:01:00.0", "0000:41:00.0"]
