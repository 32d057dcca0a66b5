"""Unit tests of the ingress filters (IP ranges, DNS names, htpasswd, allocatable GPUs) and of the test evaluators."""

from __future__ import annotations

import bcrypt
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.filter import security
from ansible_collections.llmserve.k3s.plugins.module_utils import _netsec
from netpol import connection, pod
from traefik_rules import matches, strip_prefixes


@pytest.mark.parametrize("entry, ok", [
    ("10.0.0.0/8", True), ("192.0.2.7", True), ("2001:db8::/32", True), ("0.0.0.0/0", True), ("::/0", True),
    ("10.1.2.300/24", False), ("192.0.2.1/24", False), ("10.0.0.0/33", False), ("campus", False), ("", False),
    ("2001:db8::/129", False), ("10.0.0.0 /8", False),
])
def test_bad_ip_ranges(entry, ok):
    assert (_netsec.bad_ip_ranges([entry]) == []) is ok


@pytest.mark.parametrize("name, ok", [
    ("llm.university.local", True), ("a", True), ("a-b.c-d.example", True), ("x" * 63 + ".example", True),
    ("LLM.university.local", False), ("llm_server.local", False), ("-llm.local", False), ("llm..local", False),
    ("192.0.2.10", False), ("x" * 64 + ".example", False), ("", False), (None, False), ("llm.local.", False),
])
def test_is_dns_name(name, ok):
    assert _netsec.is_dns_name(name) is ok


@pytest.mark.parametrize("cidrs, excepted, blocks", [
    # The role's defaults: the cluster's pod and service ranges are IPv4, so only the IPv4 block excepts them.
    (["0.0.0.0/0", "::/0"], ["10.42.0.0/16", "10.43.0.0/16"],
     [{"cidr": "0.0.0.0/0", "except": ["10.42.0.0/16", "10.43.0.0/16"]}, {"cidr": "::/0"}]),
    (["0.0.0.0/0", "::/0"], ["10.42.0.0/16", "fd00:42::/56"],
     [{"cidr": "0.0.0.0/0", "except": ["10.42.0.0/16"]}, {"cidr": "::/0", "except": ["fd00:42::/56"]}]),
    (["203.0.113.0/24"], [], [{"cidr": "203.0.113.0/24"}]),
    ([], ["10.42.0.0/16"], []),
])
def test_egress_blocks_except_the_ranges_of_their_own_family(cidrs, excepted, blocks):
    assert _netsec.egress_ip_blocks(cidrs, excepted) == blocks
    assert security.FilterModule().filters()["egress_ip_blocks"] is _netsec.egress_ip_blocks


def test_htpasswd_hashes_verify_and_are_kept_while_valid():
    users = [{"name": "alice", "password": "s3cret-password"}, {"name": "bob", "password": "other-password"}]
    text = security.htpasswd(users)
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert bcrypt.checkpw(b"s3cret-password", lines["alice"].encode())
    assert not bcrypt.checkpw(b"other-password", lines["alice"].encode())
    assert security.htpasswd(users, text) == text  # same passwords: same Secret content, no change
    users[0]["password"] = "new-password-1"
    changed = dict(line.split(":", 1) for line in security.htpasswd(users, text).splitlines())
    assert changed["bob"] == lines["bob"] and changed["alice"] != lines["alice"]
    assert security.htpasswd([]) == ""


@pytest.mark.parametrize("users", [[{"name": "a:b", "password": "long-enough"}], [{"name": "x"}],
                                   [{"name": "x", "password": "p" * 73}], ["alice"]])
def test_htpasswd_refuses_bad_users(users):
    with pytest.raises(AnsibleFilterError):
        security.htpasswd(users)


def test_allocatable():
    nodes = [{"metadata": {"name": "a"}, "status": {"allocatable": {"nvidia.com/gpu": "4", "cpu": "32"}}},
             {"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "8"}}},
             {"metadata": {"name": "c"}, "status": {}}]
    assert security.allocatable(nodes, "nvidia.com/gpu") == {"a": 4, "b": 0, "c": 0}


# The evaluators the render tests rely on: each must be able to say no.
@pytest.mark.parametrize("rule, path, headers, expected", [
    ("Host(`h`) && PathPrefix(`/v1/`)", "/v1/models", {}, True),
    ("Host(`h`) && PathPrefix(`/v1/`)", "/metrics", {}, False),
    ("Host(`h`) && PathPrefix(`/`)", "/metrics", {}, True),
    ("Host(`h`) && (Path(`/health`) || PathPrefix(`/v1/`))", "/health", {}, True),
    ("Host(`h`) && !PathPrefix(`/v1/`)", "/pause", {}, True),
    ("Host(`h`) && HeaderRegexp(`Authorization`, `^Bearer [!-~]+$`)", "/v1/x", {"authorization": "Bearer k"}, True),
    ("Host(`h`) && HeaderRegexp(`Authorization`, `^Bearer [!-~]+$`)", "/v1/x", {"Authorization": "Bearer "}, False),
    ("Host(`other`) && PathPrefix(`/v1/`)", "/v1/models", {}, False),
])
def test_rule_evaluator(rule, path, headers, expected):
    assert matches(rule, {"host": "h", "path": path, "headers": headers}) is expected


def test_rule_evaluator_refuses_unknown_matchers_and_strip_prefix():
    with pytest.raises(ValueError):
        matches("Host(`h`) && ClientIP(`10.0.0.0/8`)", {"host": "h", "path": "/"})
    assert strip_prefixes("/models/a/v1/models", ["/models/a"]) == "/v1/models"
    assert strip_prefixes("/models/ab/v1/models", ["/models/a"]) == "/b/v1/models"


def test_netpol_evaluator_semantics():
    web = pod("ns", {"app": "web"})
    deny = {"metadata": {"namespace": "ns", "name": "d"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    allow = {"metadata": {"namespace": "ns", "name": "a"}, "spec": {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}},
                               "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["lb"]}]}}],
                     "ports": [{"protocol": "TCP", "port": 80, "endPort": 81}]}]}}
    lb = pod("edge", {"tier": "lb"})
    assert connection([], lb, web, 80) is True
    assert connection([deny], lb, web, 80) is False
    assert connection([deny, allow], lb, web, 81) is True
    assert connection([deny, allow], lb, web, 82) is False
    assert connection([deny, allow], lb, web, 80, "UDP") is False
    assert connection([deny, allow], pod("edge", {"tier": "app"}), web, 80) is False
    assert connection([deny, allow], pod("ns", {"tier": "lb"}), web, 80) is False
