#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_gpu_info
short_description: NVIDIA GPU facts of a host, with or without a working driver
version_added: "0.1.0"
description:
  - Runs C(nvidia-smi --query-gpu=... --format=csv,nounits) and C(nvidia-smi -q -x) and returns the GPUs, the driver
    and CUDA versions, and MIG instances.
  - Without a working driver it still returns the NVIDIA display and 3D controllers found under O(pci_path)
    (vendor C(0x10de), PCI class C(0x03xxxx)) with RV(driver_loaded=false), so a play can tell
    "no GPU" from "GPU without driver" from "driver and library versions differ".
  - The result is also returned as the host fact C(llmserve_gpu_facts), which the C(llmserve.k3s.gpu_nodes) filter
    and the vLLM planner read.
  - Changes nothing on the host.
options:
  nvidia_smi_path:
    description:
      - Path of nvidia-smi. By default it is looked up on C(PATH), C(/usr/bin) and C(/usr/local/nvidia/bin).
    type: path
  pci_path:
    description: The sysfs folder of PCI devices.
    type: path
    default: /sys/bus/pci/devices
  require:
    description:
      - C(none) reports whatever it finds; C(gpu) fails when no NVIDIA GPU is on the PCI bus;
        C(driver) fails unless nvidia-smi answers for at least one GPU (RV(status=ok)).
    type: str
    choices: [none, gpu, driver]
    default: none
author:
  - llmserve.k3s maintainers (@llmserve)
"""

EXAMPLES = r"""
- name: Read the GPUs of the host
  llmserve.k3s.nvidia_gpu_info:
  register: __gpu

- name: Keep them as the fact the roles read
  ansible.builtin.set_fact:
    llmserve_gpu_facts: "{{ __gpu }}"

- name: Stop when the driver is not usable
  llmserve.k3s.nvidia_gpu_info:
    require: driver
"""

RETURN = r"""
status:
  description: >-
    C(ok), C(no_gpu) (nothing NVIDIA on the PCI bus), C(nvidia_smi_missing) (GPU present, driver not installed),
    C(driver_not_loaded) (nvidia-smi cannot talk to the kernel module), C(driver_mismatch)
    (C(Failed to initialize NVML: Driver/library version mismatch)), or C(error).
  returned: always
  type: str
  sample: ok
msg:
  description: What was found, or why the driver cannot answer and what to do.
  returned: always
  type: str
  sample: 4x NVIDIA L40, driver 550.90.07, CUDA 12.4
count:
  description: Number of GPUs (from nvidia-smi, or the PCI devices when the driver does not answer).
  returned: always
  type: int
  sample: 4
gpus:
  description:
    - One entry a GPU. Without a working driver only C(index), C(name) (from the PCI device id) and C(pci_bus_id) are set.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: nvidia-smi index.
      type: int
    name:
      description: Product name.
      type: str
      sample: NVIDIA L40
    uuid:
      description: GPU UUID.
      type: str
    memory_total_mib:
      description: Framebuffer size in MiB.
      type: int
      sample: 46068
    memory_used_mib:
      description: Framebuffer in use in MiB.
      type: int
    driver_version:
      description: Driver version.
      type: str
    compute_capability:
      description: CUDA compute capability.
      type: str
      sample: "8.9"
    pci_bus_id:
      description: PCI address, written as sysfs does.
      type: str
      sample: "0000:01:00.0"
    mig_mode:
      description: C(Enabled) or C(Disabled); null where the GPU has no MIG.
      type: str
    persistence_mode:
      description: C(Enabled) or C(Disabled).
      type: str
    mig_devices:
      description: MIG instances (index, gpu_instance_id, compute_instance_id, multiprocessor_count, memory_total_mib, memory_used_mib).
      type: list
      elements: dict
driver_version:
  description: NVIDIA driver version, null without a working driver.
  returned: always
  type: str
  sample: 550.90.07
cuda_version:
  description: Highest CUDA version the driver supports, null without a working driver.
  returned: always
  type: str
  sample: "12.4"
driver_loaded:
  description: Whether nvidia-smi could talk to the driver.
  returned: always
  type: bool
pci_devices:
  description: NVIDIA display/3D controllers on the PCI bus (pci_bus_id, device_id, class, kernel_driver, name).
  returned: always
  type: list
  elements: dict
ansible_facts:
  description: The same result as the host fact C(llmserve_gpu_facts).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmserve.k3s.plugins.module_utils._nvidia_smi import gather

ARGUMENT_SPEC = dict(
    nvidia_smi_path=dict(type="path"),
    pci_path=dict(type="path", default="/sys/bus/pci/devices"),
    require=dict(type="str", choices=["none", "gpu", "driver"], default="none"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    path = module.params["nvidia_smi_path"]

    def which():
        if path:
            return path if os.access(path, os.X_OK) else None
        return module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/nvidia/bin"])

    def run(args):
        return module.run_command(args, environ_update={"LC_ALL": "C"})

    facts = gather(run, which, module.params["pci_path"])
    require = module.params["require"]
    failed = (require == "gpu" and not facts["pci_devices"] and facts["status"] != "ok") or (
        require == "driver" and facts["status"] != "ok")
    if failed:
        details = dict((k, v) for k, v in facts.items() if k != "msg")
        module.fail_json(msg="nvidia_gpu_info (require=%s): %s" % (require, facts["msg"]), **details)
    module.exit_json(changed=False, ansible_facts={"llmserve_gpu_facts": facts}, **facts)


if __name__ == "__main__":
    main()
