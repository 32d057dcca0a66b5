# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU facts of a host from nvidia-smi, and from /sys/bus/pci/devices when the driver cannot answer.

Pure logic, stdlib only. `gather()` takes the two side effects as callables (`run(args) -> (rc, stdout, stderr)`
and `which() -> path or None`), so the whole decision tree is tested on recorded nvidia-smi output.

The result has the shape the roles read as the host fact `llmserve_gpu_facts`:
{count, gpus[{index, name, uuid, memory_total_mib, ...}], driver_version, cuda_version, driver_loaded, status, msg,
pci_devices}.
"""

from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET

NVIDIA_VENDOR = "0x10de"
QUERY_FIELDS = ("index", "name", "uuid", "memory.total", "memory.used", "driver_version", "compute_cap",
                "pci.bus_id", "mig.mode.current", "persistence_mode")
# Header kept (columns are matched by name, so older drivers that print them in another order still parse).
QUERY_ARGS = ["--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,nounits"]
# Drivers before compute_cap existed (< 510) refuse the whole query; this one is answered by every driver.
QUERY_ARGS_OLD = ["--query-gpu=" + ",".join(f for f in QUERY_FIELDS if f != "compute_cap"), "--format=csv,nounits"]
XML_ARGS = ["-q", "-x"]

STATUSES = ("ok", "no_gpu", "nvidia_smi_missing", "driver_not_loaded", "driver_mismatch", "error")

# PCI device ids of common data-centre and workstation GPUs: names the GPUs when no driver is loaded.
PCI_NAMES = {
    "0x26b5": "NVIDIA L40", "0x26b9": "NVIDIA L40S", "0x27b8": "NVIDIA L4", "0x2236": "NVIDIA A10",
    "0x20b0": "NVIDIA A100-SXM4-40GB", "0x20f1": "NVIDIA A100-PCIE-40GB", "0x20b2": "NVIDIA A100-SXM4-80GB",
    "0x20b5": "NVIDIA A100 80GB PCIe", "0x2330": "NVIDIA H100 80GB HBM3", "0x2331": "NVIDIA H100 PCIe",
    "0x2321": "NVIDIA H100 NVL", "0x2335": "NVIDIA H200", "0x2684": "NVIDIA GeForce RTX 4090",
    "0x2204": "NVIDIA GeForce RTX 3090", "0x2230": "NVIDIA RTX A6000",
}

_NA = re.compile(r"^\[?(N/A|Not Supported|Unknown Error|Insufficient Permissions|Requested functionality has been deprecated)\]?$", re.I)
_UNIT = re.compile(r"\s*\[[^\]]*\]$")


def _value(text):
    text = (text or "").strip()
    return None if not text or _NA.match(text) else text


def _int(text):
    text = _value(text)
    if text is None:
        return None
    match = re.match(r"^(-?\d+)", text)
    return int(match.group(1)) if match else None


def normalize_bus_id(bus_id):
    """nvidia-smi prints 00000000:01:00.0, sysfs 0000:01:00.0: both become 0000:01:00.0 (lower case)."""
    if not bus_id:
        return None
    parts = bus_id.strip().lower().split(":")
    if len(parts) == 3:
        parts[0] = parts[0][-4:].rjust(4, "0")
    return ":".join(parts)


def _gpu(index=None, name=None, uuid=None, total=None, used=None, driver=None, cc=None, bus=None, mig=None, persist=None):
    return {"index": index, "name": name, "uuid": uuid, "memory_total_mib": total, "memory_used_mib": used,
            "driver_version": driver, "compute_capability": cc, "pci_bus_id": normalize_bus_id(bus),
            "mig_mode": mig, "persistence_mode": persist, "mig_devices": []}


def parse_query_csv(text):
    """`nvidia-smi --query-gpu=... --format=csv[,nounits]` (with its header line) -> list of GPU dicts."""
    rows = [r for r in csv.reader(io.StringIO(text or ""), skipinitialspace=True) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [_UNIT.sub("", h.strip()) for h in rows[0]]
    if "name" not in header:
        raise ValueError("nvidia-smi CSV output has no header line with a name column: %r" % (rows[0],))
    gpus = []
    for position, row in enumerate(rows[1:]):
        cell = dict(zip(header, row))
        index = _int(cell.get("index"))
        gpus.append(_gpu(
            index=position if index is None else index, name=_value(cell.get("name")), uuid=_value(cell.get("uuid")),
            total=_int(cell.get("memory.total")), used=_int(cell.get("memory.used")),
            driver=_value(cell.get("driver_version")), cc=_value(cell.get("compute_cap")),
            bus=_value(cell.get("pci.bus_id")), mig=_value(cell.get("mig.mode.current")),
            persist=_value(cell.get("persistence_mode"))))
    return gpus


def _text(node, path):
    found = node.find(path)
    return _value(found.text) if found is not None and found.text is not None else None


def parse_query_xml(text):
    """`nvidia-smi -q -x` -> {driver_version, cuda_version, gpus[...]} (MIG instances under each GPU's mig_devices)."""
    try:
        root = ET.fromstring((text or "").strip())
    except ET.ParseError as exc:
        raise ValueError("nvidia-smi -q -x output is not XML: %s" % exc)
    if root.tag != "nvidia_smi_log":
        raise ValueError("nvidia-smi -q -x output has root <%s>, not <nvidia_smi_log>" % root.tag)
    driver = _text(root, "driver_version")
    gpus = []
    for position, node in enumerate(root.findall("gpu")):
        minor = _int(_text(node, "minor_number"))
        gpu = _gpu(index=position if minor is None else minor, name=_text(node, "product_name"), uuid=_text(node, "uuid"),
                   total=_int(_text(node, "fb_memory_usage/total")), used=_int(_text(node, "fb_memory_usage/used")),
                   driver=driver, cc=_text(node, "compute_cap"),
                   bus=_text(node, "pci/pci_bus_id") or node.get("id"), mig=_text(node, "mig_mode/current_mig"),
                   persist=_text(node, "persistence_mode"))
        for mig in node.findall("mig_devices/mig_device"):
            gpu["mig_devices"].append({
                "index": _int(_text(mig, "index")), "gpu_instance_id": _int(_text(mig, "gpu_instance_id")),
                "compute_instance_id": _int(_text(mig, "compute_instance_id")),
                "multiprocessor_count": _int(_text(mig, "device_attributes/shared/multiprocessor_count")),
                "memory_total_mib": _int(_text(mig, "fb_memory_usage/total")),
                "memory_used_mib": _int(_text(mig, "fb_memory_usage/used"))})
        gpus.append(gpu)
    return {"driver_version": driver, "cuda_version": _text(root, "cuda_version"), "gpus": gpus}


def classify_failure(rc, output):
    """Why nvidia-smi failed: (status, message) from its exit code and output."""
    text = (output or "").strip()
    first = text.splitlines()[0] if text else "no output"
    if "version mismatch" in text.lower():
        return "driver_mismatch", (
            "nvidia-smi: %s. The loaded kernel module and the user-space NVIDIA libraries differ (usually a driver "
            "upgrade without a reboot). Fix: reboot the host, or unload and reload the nvidia kernel modules." % first)
    if "couldn't communicate with the nvidia driver" in text.lower() or "couldn't communicate" in text.lower():
        return "driver_not_loaded", (
            "nvidia-smi: %s The NVIDIA kernel module is not loaded (not installed for this kernel, nouveau holds the "
            "GPU, or the host has not been rebooted since the install). Fix: install the driver for the running kernel "
            "(role nvidia_driver) and reboot." % first)
    if "no devices were found" in text.lower():
        return "no_gpu", "nvidia-smi: No devices were found: the driver is loaded but sees no NVIDIA GPU."
    return "error", "nvidia-smi exited with %s: %s" % (rc, first)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def scan_pci(root="/sys/bus/pci/devices"):
    """NVIDIA display/3D controllers (vendor 0x10de, PCI class 0x03xxxx) under a sysfs PCI tree, sorted by address.

    NVIDIA audio (0x0403xx), USB (0x0c03xx) and serial bus functions of the same cards are left out.
    """
    devices = []
    try:
        entries = sorted(os.listdir(root))
    except (IOError, OSError):
        return devices
    for entry in entries:
        base = os.path.join(root, entry)
        if (_read(os.path.join(base, "vendor")) or "").lower() != NVIDIA_VENDOR:
            continue
        klass = (_read(os.path.join(base, "class")) or "").lower()
        if not klass.startswith("0x03"):
            continue
        device = (_read(os.path.join(base, "device")) or "").lower()
        driver_link = os.path.join(base, "driver")
        driver = os.path.basename(os.readlink(driver_link)) if os.path.islink(driver_link) else None
        devices.append({"pci_bus_id": normalize_bus_id(entry), "device_id": device, "class": klass,
                        "kernel_driver": driver, "name": PCI_NAMES.get(device, "NVIDIA device [10de:%s]" % device[2:])})
    return devices


def _from_pci(pci):
    gpus = []
    for index, dev in enumerate(pci):
        gpu = _gpu(index=index, name=dev["name"], bus=dev["pci_bus_id"])
        gpus.append(gpu)
    return gpus


def _merge(gpus, xml_gpus):
    """Add what only the XML has (MIG instances; compute capability where the CSV lacked it) to the CSV's GPUs."""
    by_key = {}
    for gpu in xml_gpus:
        by_key[gpu["uuid"] or gpu["pci_bus_id"]] = gpu
        by_key[gpu["pci_bus_id"]] = gpu
    for gpu in gpus:
        other = by_key.get(gpu["uuid"]) or by_key.get(gpu["pci_bus_id"])
        if other is None:
            continue
        gpu["mig_devices"] = other["mig_devices"]
        for key in ("compute_capability", "mig_mode", "persistence_mode"):
            if gpu[key] is None:
                gpu[key] = other[key]
    return gpus


def _result(status, msg, gpus, pci, driver_loaded, driver_version=None, cuda_version=None):
    return {"status": status, "msg": msg, "count": len(gpus), "gpus": gpus, "driver_version": driver_version,
            "cuda_version": cuda_version, "driver_loaded": driver_loaded, "pci_devices": pci}


def gather(run, which, pci_root="/sys/bus/pci/devices"):
    """GPU facts of this host. Never raises for a host state; only a programming error would."""
    pci = scan_pci(pci_root)
    smi = which()
    if not smi:
        if not pci:
            return _result("no_gpu", "No NVIDIA GPU on the PCI bus and no nvidia-smi: this host has no NVIDIA GPU.", [], pci, False)
        return _result("nvidia_smi_missing",
                       "%d NVIDIA GPU(s) on the PCI bus (%s) but nvidia-smi is not installed: the NVIDIA driver is missing. "
                       "Fix: install it (role nvidia_driver)." % (len(pci), ", ".join(sorted(set(d["name"] for d in pci)))),
                       _from_pci(pci), pci, False)
    rc, out, err = run([smi] + QUERY_ARGS)
    if rc != 0 and "compute_cap" in (out + err) and "not a valid field" in (out + err):
        rc, out, err = run([smi] + QUERY_ARGS_OLD)
    if rc != 0:
        status, msg = classify_failure(rc, (out or "") + "\n" + (err or ""))
        if status == "no_gpu" and pci:
            status, msg = "driver_not_loaded", msg + " Yet %d NVIDIA GPU(s) are on the PCI bus (%s): check dmesg (NVRM)." % (
                len(pci), ", ".join(d["pci_bus_id"] for d in pci))
        return _result(status, msg, _from_pci(pci) if status != "no_gpu" else [], pci, False)
    try:
        gpus = parse_query_csv(out)
    except ValueError as exc:
        return _result("error", str(exc), _from_pci(pci), pci, False)
    cuda = None
    driver = next((g["driver_version"] for g in gpus if g["driver_version"]), None)
    xrc, xout, _xerr = run([smi] + XML_ARGS)
    if xrc == 0:
        try:
            xml = parse_query_xml(xout)
        except ValueError:
            xml = None
        if xml:
            cuda = xml["cuda_version"]
            driver = driver or xml["driver_version"]
            gpus = _merge(gpus, xml["gpus"])
    if not gpus:
        return _result("no_gpu", "nvidia-smi lists no GPU.", [], pci, True, driver, cuda)
    names = ", ".join("%dx %s" % (sum(1 for g in gpus if g["name"] == n), n) for n in sorted(set(g["name"] for g in gpus)))
    return _result("ok", "%s, driver %s, CUDA %s" % (names, driver, cuda or "unknown"), gpus, pci, True, driver, cuda)
