"""cluster.yml with apply on (what site.yml runs), against an API server address where nothing listens.

No cluster can run here (no k3s): this checks the wiring up to the cluster — every preflight and render passes,
the bundle is complete, and the first apply task gets as far as connecting (its arguments are accepted) — not
the apply itself.
"""

from __future__ import annotations

from k8s_schema import load_bundle
from playbook import run_playbook
from processes import free_port

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:%d"}}]
users: [{name: none, user: {token: not-a-token}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def test_apply_reaches_for_the_cluster_after_rendering_everything(tmp_path, workstation):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % free_port(), encoding="utf-8")
    result = run_playbook("cluster.yml", "inventories/workstation",
                          extra_vars={"llmserve_kubeconfig": str(kubeconfig), "llmserve_render_dir": str(tmp_path / "out")},
                          env={"LLMSERVE_API_KEYS": "sk-wiring-0123456789abcdef", "GRAFANA_ADMIN_PASSWORD": "wiring-password-0123"})
    assert result.returncode != 0
    output = " ".join(result.stdout.split())
    assert "TASK [llmserve.k3s.manifests : Server-side apply the definitions and namespaces]" in output
    assert "Connection refused" in output
    assert "Unsupported parameters" not in output
    assert load_bundle(tmp_path / "out") == workstation[1]
