"""From a rendered bundle to what the Kubernetes API stand-in serves Traefik: the bundle's own objects, unchanged,
plus what a cluster would add around them — the TLS and basic-auth Secrets the ingress role applies (made by the
role's own tasks and filter), EndpointSlices that point a Service's pods at local processes, and a Node.
"""

from __future__ import annotations

import base64
import json
import pathlib
import textwrap

from playbook import run_playbook

# What Traefik's kubernetescrd provider reads; the rest of the bundle (Deployments, NetworkPolicies, ...) is for k3s.
SERVED_KINDS = {"Service", "Secret", "ConfigMap", "IngressRoute", "Middleware", "TraefikService", "TLSOption",
                "TLSStore", "ServersTransport", "IngressRouteTCP", "IngressRouteUDP", "MiddlewareTCP",
                "ServersTransportTCP"}

_SECRETS_PLAY = textwrap.dedent("""\
    # The ingress role's own PKI tasks and htpasswd filter, run on the controller as site.yml runs them.
    - name: Secrets the ingress role applies
      hosts: localhost
      connection: local
      gather_facts: false
      tasks:
        - name: Self-signed CA and host certificate (roles/ingress/tasks/tls_selfsigned.yml)
          ansible.builtin.include_role:
            name: llmserve.k3s.ingress
            tasks_from: tls_selfsigned
        - name: Basic-auth users file, as the role puts it in the Secret
          ansible.builtin.copy:
            dest: "{{ ingress_tls_pki_dir }}/users"
            content: "{{ ingress_basic_auth_users | llmserve.k3s.htpasswd('') }}"
            mode: "0600"
          when: ingress_basic_auth_users | length > 0
    """)


def make_secrets(workdir, host, basic_auth_users=()):
    """Run the role's PKI tasks (and htpasswd filter) into workdir/pki; returns that folder."""
    workdir = pathlib.Path(workdir)
    play = workdir / "secrets.yml"
    play.write_text(_SECRETS_PLAY, encoding="utf-8")
    pki = workdir / "pki"
    result = run_playbook(play, "inventories/workstation", extra_vars={
        "ingress_tls_pki_dir": str(pki), "ingress_host": host,
        "ingress_basic_auth_users": list(basic_auth_users)}, timeout=300)
    if result.returncode != 0:
        raise RuntimeError("the PKI play failed:\n" + result.stdout[-4000:])
    return pki


def _b64(path):
    return base64.b64encode(pathlib.Path(path).read_bytes()).decode()


def tls_secret(pki, host, name, namespace):
    """The Secret roles/ingress/tasks/apply.yml makes in self-signed mode (data instead of stringData, as read back)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}},
            "data": {"tls.crt": _b64(pki / f"{host}.crt"), "tls.key": _b64(pki / f"{host}.key"),
                     "ca.crt": _b64(pki / "ca.crt")}}


def basic_auth_secret(pki, name, namespace):
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmserve", "app.kubernetes.io/managed-by": "llmserve.k3s"}},
            "data": {"users": _b64(pki / "users")}}


def endpoint_slice(service, backends):
    """An EndpointSlice of a rendered Service: each (port name, address, port) of `backends` as one ready endpoint.

    Traefik matches the slice's ports to the Service's by name, and keeps one endpoint per address."""
    meta = service["metadata"]
    by_port = {}
    for port_name, address, port in backends:
        by_port.setdefault((port_name, port), []).append(address)
    slices = []
    for index, ((port_name, port), addresses) in enumerate(sorted(by_port.items())):
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{meta['name']}-standin-{index}", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"],
                                    "endpointslice.kubernetes.io/managed-by": "standin"}},
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for a in addresses]})
    return slices


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "standin-node", "labels": {"kubernetes.io/hostname": "standin-node"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "conditions": [{"type": "Ready", "status": "True"}]}}


def bundle_objects(bundle):
    """The rendered objects Traefik reads, unchanged, from load_bundle()'s {path: object}."""
    return [obj for obj in bundle.values() if obj.get("kind") in SERVED_KINDS]


def find(bundle, kind, name=None):
    found = [o for o in bundle.values() if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]
    if not found:
        raise LookupError(f"no {kind} {name or ''} in the bundle: {sorted(bundle)}")
    return found


def service_port_name(service, port):
    for entry in service["spec"]["ports"]:
        if entry["port"] == port or entry.get("name") == port:
            return entry["name"]
    raise LookupError(f"Service {service['metadata']['name']} has no port {port}: {json.dumps(service['spec']['ports'])}")
