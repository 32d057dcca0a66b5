"""playbooks/reset.yml on the server and the agent: k3s gone, the model cache kept.

Runs after test_custom.py (file order), once for both hosts.
"""

import pytest

from converge_helper import converge


@pytest.fixture(scope="module")
def reset_run():
    return converge(playbook="playbooks/reset.yml", extra_vars={"llmserve_model_cache_path": "/srv/models"})


def test_reset_removes_k3s_and_keeps_the_models(host, reset_run):
    rc, out = reset_run
    assert rc == 0, out[-3000:]
    for path in ("/usr/local/bin/k3s", "/usr/local/bin/kubectl", "/etc/rancher/k3s", "/var/lib/rancher/k3s",
                 "/etc/systemd/system/k3s.service", "/etc/systemd/system/k3s-agent.service"):
        assert not host.file(path).exists, path
    assert host.file("/srv/models/.llmserve/models/tiny-llama.json").exists
    assert host.file("/srv/models/huggingface/hub").is_directory
