"""Secrets (API keys, basic-auth passwords, TLS keys, the HF token) never reach the bundle or the Ansible output.

The render runs for real; the apply paths run for real up to the Kubernetes call, against a kubeconfig whose API
server refuses connections (no cluster runs here), at -vvv so that a task without no_log would print its arguments.
The self-signed CA and certificate are really generated with community.crypto; the basic-auth hashes are produced by
the filter the apply task uses and checked with bcrypt and with Apache's htpasswd.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import shutil
import subprocess

import bcrypt
import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from playbook import recap, run_playbook

KEYS = ["sk-llm-test-key-AAAA-0000-secret", "sk-llm-test-key-BBBB-1111-secret", "sk-llm-test-key-CCCC-2222-secret"]
PASSWORD = "correct-horse-battery-staple-42"
HF_TOKEN = "hf_testTokenThatMustNotLeak0123456789"
HOST = "llm.university.local"

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: nowhere, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]
current-context: nowhere
users: [{name: nobody, user: {token: not-a-token}}]
"""


def _files_text(root):
    return "\n".join(p.read_text(errors="replace") for p in pathlib.Path(root).rglob("*") if p.is_file())


# The module's renders, started in the session's render pool when the module starts.
PREFETCH = {
    "keyed": {"extra_vars": {"llmserve_api_keys": KEYS, "llmserve_hf_token": HF_TOKEN,
                             "llmserve_basic_auth_users": [{"name": "alice", "password": PASSWORD}]}},
    "auth-none": {"extra_vars": {"llmserve_auth_mode": "none"}, "tags": "models"},
}


@pytest.fixture(scope="module")
def keyed(renders):
    return renders.bundle(label="keyed", **PREFETCH["keyed"])


def test_render_and_output_hold_no_secret(keyed):
    dest, output = keyed[0], keyed[2]
    text = _files_text(dest)
    for secret in KEYS + [PASSWORD, HF_TOKEN]:
        assert secret not in text
        assert secret not in output
    assert not [p for p in pathlib.Path(dest).rglob("*") if p.name.startswith("secret-")]


def _model_containers(dest):
    out = []
    for path in sorted(pathlib.Path(dest, "models").glob("*/deployment-vllm-*.yaml")):
        if "-router" not in path.name:
            (ctr,) = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"]
            out.append(ctr)
    return out


@pytest.mark.parametrize("label", ["keyed", "auth-none"])
def test_models_read_only_the_internal_key_in_every_auth_mode(renders, label):
    """The users' keys stay with the gateway: with three of them or with none, every model reads the one internal key."""
    dest = renders.bundle(label=label, **PREFETCH[label])[0]
    containers = _model_containers(dest)
    assert containers
    for ctr in containers:
        keyed = [e for e in ctr["env"] if "API_KEY" in e["name"]]
        assert keyed == [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llmserve-internal", "key": "vllm-api-key"}}}]
        assert not [a for a in ctr["args"] if "api-key" in a.replace("_", "-")]
        # Probes stay on /health, which vLLM serves without a key.
        assert ctr["readinessProbe"]["httpGet"]["path"] == "/health"


def _failing_apply(tmp_path, extra):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    ev = {"llmserve_apply": True, "llmserve_kubeconfig": str(kubeconfig), "llmserve_render_dir": str(tmp_path / "bundle"),
          "ingress_tls_pki_dir": str(tmp_path / "pki"), "llmserve_hf_token": HF_TOKEN}
    ev.update(extra)
    return run_playbook("cluster.yml", "inventories/workstation", extra_vars=ev, tags="ingress", extra_args=["-vvv"])


@pytest.mark.parametrize("mode", ["api-key", "tls", "basic"])
def test_apply_tasks_do_not_print_secrets(mode, tmp_path):
    # The TLS Secret is applied before the identities: cert-manager leaves it out, so the identities task is the first to fail.
    extra = {"api-key": {"llmserve_auth_mode": "api-key", "llmserve_ingress_tls_mode": "cert-manager",
                         "ingress_cert_manager_issuer": "campus-ca",
                         "llmserve_api_keys": KEYS[:2] + [{"name": "carol", "key": KEYS[2], "groups": ["staff"]}]},
             "tls": {"llmserve_auth_mode": "none"},
             "basic": {"llmserve_auth_mode": "basic", "llmserve_ingress_tls_mode": "cert-manager",
                       "ingress_cert_manager_issuer": "campus-ca",
                       "llmserve_basic_auth_users": [{"name": "alice", "password": PASSWORD}]}}[mode]
    result = _failing_apply(tmp_path, extra)
    out = result.stdout
    failed_task = {"api-key": "Apply the gateway identities Secret", "tls": "Apply the self-signed TLS Secret",
                   "basic": "Apply the basic-auth Secret"}[mode]
    assert result.returncode != 0
    assert "TASK [llmserve.k3s.ingress : %s]" % failed_task in out, out[-4000:]
    assert "censored" in out.split(failed_task)[-1]
    for secret in KEYS + [PASSWORD, HF_TOKEN]:
        assert secret not in out
    assert "$2b$" not in out
    if mode == "tls":
        key = (tmp_path / "pki" / (HOST + ".key")).read_text()
        body = [line for line in key.splitlines() if line and not line.startswith("-----")]
        # The first line holds the private scalar (the last one the public key, which modules may print).
        assert body and body[0] not in out and "".join(body) not in "".join(out.split())
    assert not (tmp_path / "bundle").exists() or "PRIVATE KEY" not in _files_text(tmp_path / "bundle")


PKI_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    # The ingress role's defaults read the plan fact (host, namespace), as in every playbook.
    - ansible.builtin.include_role:
        name: llmserve.k3s.plan
    - ansible.builtin.include_role:
        name: llmserve.k3s.ingress
        tasks_from: tls_selfsigned
"""


def test_selfsigned_ca_and_certificate_are_real_and_idempotent(tmp_path):
    play = tmp_path / "pki.yml"
    play.write_text(PKI_PLAY)
    ev = {"ingress_tls_pki_dir": str(tmp_path / "pki"), "llmserve_ingress_host": HOST, "llmserve_cluster_name": "lab"}
    first = run_playbook(str(play), "inventories/workstation", extra_vars=ev)
    assert first.returncode == 0, first.stdout[-4000:]
    assert recap(first.stdout)["changed"] >= 4
    pki = tmp_path / "pki"
    assert oct(pki.stat().st_mode & 0o777) == "0o700"
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((pki / (HOST + ".key")).stat().st_mode & 0o777) == "0o600"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((pki / (HOST + ".crt")).read_bytes())
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [HOST]
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    days = (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days
    assert 820 <= days <= 825
    second = run_playbook(str(play), "inventories/workstation", extra_vars=ev)
    assert second.returncode == 0 and recap(second.stdout)["changed"] == 0, second.stdout[-3000:]
    assert x509.load_pem_x509_certificate((pki / (HOST + ".crt")).read_bytes()).serial_number == cert.serial_number


HTPASSWD_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ users | llmserve.k3s.htpasswd(lookup('ansible.builtin.file', old) if old else '') }}"
        mode: "0600"
      no_log: true
"""


def test_basic_auth_hashes_verify_against_their_passwords(tmp_path):
    play = tmp_path / "htpasswd.yml"
    play.write_text(HTPASSWD_PLAY)
    users = [{"name": "alice", "password": PASSWORD}, {"name": "bob", "password": "another-Passw0rd"}]
    out = tmp_path / "users"
    result = run_playbook(str(play), "inventories/workstation", extra_vars={"users": users, "out": str(out), "old": ""})
    assert result.returncode == 0, result.stdout[-3000:]
    lines = dict(line.split(":", 1) for line in out.read_text().splitlines())
    assert set(lines) == {"alice", "bob"}
    for user in users:
        hashed = lines[user["name"]]
        assert hashed.startswith("$2b$10$")
        assert bcrypt.checkpw(user["password"].encode(), hashed.encode())
        assert not bcrypt.checkpw(b"wrong-password", hashed.encode())
    htpasswd = shutil.which("htpasswd")
    if htpasswd:  # Apache's own bcrypt check (apache2-utils), independent of the Python bcrypt package
        ok = subprocess.run([htpasswd, "-vb", str(out), "alice", PASSWORD], capture_output=True, check=False)
        bad = subprocess.run([htpasswd, "-vb", str(out), "alice", "wrong-password"], capture_output=True, check=False)
        assert ok.returncode == 0 and bad.returncode != 0
    # Idempotent: with the current Secret content, hashes that still verify are kept; a changed password is rehashed.
    users[1]["password"] = "changed-Passw0rd"
    again = tmp_path / "users2"
    result = run_playbook(str(play), "inventories/workstation", extra_vars={"users": users, "out": str(again), "old": str(out)})
    assert result.returncode == 0, result.stdout[-3000:]
    lines2 = dict(line.split(":", 1) for line in again.read_text().splitlines())
    assert lines2["alice"] == lines["alice"]
    assert lines2["bob"] != lines["bob"] and bcrypt.checkpw(b"changed-Passw0rd", lines2["bob"].encode())


IDENTITIES_PLAY = """- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [secrets.yml]
  tasks:
    # The expression of roles/ingress/tasks/api_keys.yml, written to a file instead of a Secret.
    - ansible.builtin.copy:
        dest: "{{ out }}"
        content: "{{ llmserve_api_keys | llmserve.k3s.gateway_identities(llmserve_basic_auth_users) | to_json(sort_keys=True) }}"
        mode: "0600"
      no_log: true
"""


def _vaulted(text, password):
    body = VaultLib([("default", VaultSecret(password))]).encrypt(text).decode()
    return "!vault |\n" + "".join("      " + line + "\n" for line in body.splitlines())


def test_identities_document_from_vaulted_keys_holds_hashes_only(tmp_path):
    """Keys and a password from Ansible Vault (one plain key, one named) through the real filter and templating."""
    (tmp_path / "vault-password").write_text("vault-test-password\n")
    (tmp_path / "secrets.yml").write_text(
        "llmserve_api_keys:\n"
        "  - " + _vaulted(KEYS[0], b"vault-test-password")
        + "  - name: carol\n    groups: [staff, physics]\n    key: " + _vaulted(KEYS[1], b"vault-test-password").replace("\n      ", "\n        ")
        + "llmserve_basic_auth_users:\n  - {name: alice, password: " + json.dumps(PASSWORD) + ", groups: [staff]}\n")
    play = tmp_path / "identities.yml"
    play.write_text(IDENTITIES_PLAY)
    out = tmp_path / "identities.json"
    result = run_playbook(str(play), "inventories/workstation", extra_vars={"out": str(out)},
                          extra_args=["--vault-password-file", str(tmp_path / "vault-password"), "-vvv"])
    assert result.returncode == 0, result.stdout[-3000:]
    text = out.read_text()
    for secret in KEYS[:2] + [PASSWORD]:
        assert secret not in text and secret not in result.stdout
    sha = [hashlib.sha256(k.encode()).hexdigest() for k in KEYS[:2]]
    assert json.loads(text) == {"keys": [{"name": "key-" + sha[0][:8], "groups": [], "sha256": sha[0]},
                                         {"name": "carol", "groups": ["staff", "physics"], "sha256": sha[1]}],
                                "users": {"alice": ["staff"]}}
