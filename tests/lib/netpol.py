"""Evaluate Kubernetes NetworkPolicies as data: may this pod reach that pod (or address) on this port?

Follows the NetworkPolicy semantics (networking.k8s.io/v1): a pod is isolated for a direction when any policy of its
namespace selects it with that policy type; then a connection is allowed when some selecting policy has a rule whose
peers and ports all match. Peers: podSelector (same namespace), namespaceSelector (+ podSelector), ipBlock.
Namespaces carry their kubernetes.io/metadata.name label, as the API server sets it.
"""

from __future__ import annotations

import ipaddress


def selects(selector, labels):
    """matchLabels and matchExpressions of a LabelSelector; {} selects everything."""
    selector = selector or {}
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _types(policy):
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _port_ok(ports, port, protocol):
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        end = p.get("endPort", p["port"])
        if isinstance(p["port"], int) and p["port"] <= port <= end:
            return True
    return False


def _peer_ok(peer, policy_ns, other):
    """other: {'namespace', 'ns_labels', 'labels'} for a pod, or {'ip': '1.2.3.4'} for an address outside."""
    if "ipBlock" in peer:
        if "ip" not in other:
            return False
        ip = ipaddress.ip_address(other["ip"])
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"])
        if ip.version != net.version or ip not in net:
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [] if ipaddress.ip_network(e).version == ip.version)
    if "ip" in other:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other["ns_labels"]):
            return False
    elif other["namespace"] != policy_ns:
        return False
    return selects(peer.get("podSelector") or {}, other["labels"])


def allowed(policies, direction, pod, other, port, protocol="TCP"):
    """Is traffic allowed for pod (dict namespace/labels) in direction Ingress (other -> pod) or Egress (pod -> other)?"""
    mine = [p for p in policies if p["metadata"]["namespace"] == pod["namespace"]
            and selects(p["spec"].get("podSelector"), pod["labels"]) and direction in _types(p)]
    if not mine:
        return True  # not isolated
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_ok(peer, policy["metadata"]["namespace"], other) for peer in peers):
                continue
            if _port_ok(rule.get("ports"), port, protocol):
                return True
    return False


def pod(namespace, labels):
    return {"namespace": namespace, "ns_labels": {"kubernetes.io/metadata.name": namespace}, "labels": labels}


def connection(policies, src, dst, port, protocol="TCP"):
    """A connection between two pods (or a pod and {'ip': ...}) needs the source's egress and the destination's ingress."""
    out_ok = "ip" in src or allowed(policies, "Egress", src, dst, port, protocol)
    in_ok = "ip" in dst or allowed(policies, "Ingress", dst, src, port, protocol)
    return out_ok and in_ok
