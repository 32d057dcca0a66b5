"""The ingress bundle, rendered by the real playbook in the default and in non-default configurations.

Here the routes are checked as data (CRD schemas of Traefik v3.7 and helm-controller, rule expressions evaluated
against request paths, the front door's prefix strip applied to them); the real Traefik, front door and vLLM run in
the end-to-end tests.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import yaml

from k8s_schema import validate
from traefik_rules import matches

from ansible_collections.llmserve.k3s.plugins.module_utils._shared import PORTS

DOOR_PORTS = {"http": PORTS["frontdoor"], "auth": PORTS["frontdoor_auth"], "metrics": PORTS["frontdoor_metrics"]}

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "roles" / "ingress" / "files" / "llmserve_frontdoor.py"

HOST = "llm.university.local"
ALLOWED = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings"]
DENIED = ["/metrics", "/health", "/pause", "/resume", "/abort_requests", "/update_weights", "/docs", "/openapi.json",
          "/version", "/ping", "/tokenize", "/v1", "/v10/x", "/load", "/is_sleeping", "/sleep", "/wake_up",
          "/collective_rpc", "/reset_prefix_cache", "/server_info", "/invocations", "/scale_elastic_ep"]
BEARER = {"Authorization": "Bearer sk-test-0123456789abcdef"}


@pytest.fixture(scope="module")
def basic_ab(renders):
    """Workstation with BasicAuth, an allow list, a per-user limit counted in the collection's Redis, an A/B test and another default model."""
    return renders.bundle("inventories/workstation", label="basic-ab", extra_vars={
        "llmserve_auth_mode": "basic",
        "ingress_ip_allow_list": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
        "ingress_trusted_ips": ["192.0.2.0/24"],
        "ingress_rate_limit": {"average": 5, "period": "1m", "burst": 10},
        "ingress_address_rate_limit": {"average": 50, "period": "1s", "burst": 100, "ip_depth": 1},
        "llmserve_redis_enabled": True,
        "ingress_ab_test": {"enabled": True, "path": "/ab", "backends": [
            {"model": "llama-3.1-8b", "weight": 90}, {"model": "mixtral-8x7b", "weight": 10}]},
        "llmserve_ingress_default_model": "mixtral-8x7b",
    })


@pytest.fixture(scope="module")
def forward_cookie(renders):
    """Multinode, ForwardAuth to an SSO proxy, no in-flight limit, a small body limit; ingress component alone."""
    return renders.bundle("inventories/multinode", label="forward", extra_vars={
        "llmserve_auth_mode": "forward",
        "ingress_forward_auth": {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth", "trust_forward_header": True,
                                 "response_headers": ["X-Auth-Request-User", "X-Auth-Request-Groups"],
                                 "user_header": "X-Auth-Request-User", "groups_header": "X-Auth-Request-Groups"},
        "ingress_in_flight": {"enabled": False, "amount": 1},
        "ingress_max_request_body_bytes": 65536,
        "ingress_alias_headers_strategy": "reject", "ingress_traefik_version": "3.7.13",
        "ingress_http_redirect": False,
        "llmserve_ingress_tls_mode": "cert-manager",
        "ingress_cert_manager_issuer": "campus-ca",
    }, tags="ingress")


def _objects(bundle, kind, folder="ingress/"):
    return [o for p, o in bundle[1].items() if p.startswith(folder) and o["kind"] == kind]


def _route_obj(bundle):
    (route,) = _objects(bundle, "IngressRoute")
    return route


def _middlewares(bundle):
    return {o["metadata"]["name"]: o["spec"] for o in _objects(bundle, "Middleware")}


def _enabled(bundle):
    return sorted(o["spec"]["servedModelName"] for o in bundle[1].values() if o["kind"] == "LLMConfig")


ALL = ["workstation", "multinode", "basic_ab", "forward_cookie"]


@pytest.mark.parametrize("name", ALL)
def test_every_ingress_object_validates_against_the_crds(name, request):
    bundle = request.getfixturevalue(name)
    objects = {p: o for p, o in bundle[1].items() if p.startswith("ingress/") and o["kind"] != "Certificate"}
    assert {"IngressRoute", "Middleware", "HelmChartConfig", "Deployment", "Service", "ConfigMap"} <= {o["kind"] for o in objects.values()}
    errors = {p: e for p, o in objects.items() if (e := validate(o))}
    assert errors == {}


def _door_config(bundle):
    (cm,) = [o for o in _objects(bundle, "ConfigMap") if o["metadata"]["name"] == "llmserve-frontdoor"]
    return json.loads(cm["data"]["config.json"])


def _door_path(path, config):
    """The path the gateway forwards (its own allow list, run on the rendered config); None when it refuses."""
    spec = importlib.util.spec_from_file_location("llmserve_frontdoor", SCRIPT)
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    match = door.API_PATH.match(path)
    if not match or match.group("endpoint") not in door.ENDPOINTS or any(s in ("", ".", "..") for s in path.split("/")[1:]):
        return None
    if match.group("model") and match.group("model") not in config["models"]:
        return None
    if match.group("prefix") and match.group("prefix") not in config["ab_tests"]:
        return None
    return "/v1/" + match.group("endpoint")


@pytest.mark.parametrize("name", ALL)
def test_one_router_carries_every_model_path_with_the_limits(name, request):
    """Traefik builds one RateLimit / InFlightReq per router: one router for every path keeps the limits per client.
    Order: error pages, allow list, the address limit before anyone is known, Traefik's own auth (basic, forward),
    the gateway's ForwardAuth, then the limits per identity on the header the gateway sets."""
    bundle = request.getfixturevalue(name)
    route = _route_obj(bundle)
    mws = _middlewares(bundle)
    mode = {"basic_ab": "basic", "forward_cookie": "forward"}.get(name, "api-key")
    (only,) = route["spec"]["routes"]
    paths = ["/v1/chat/completions", "/v1/models", "/v1/tokenize"] + [
        "/models/%s/v1/completions" % m for m in _door_config(bundle)["models"]] + ["/models/nope/v1/x"]
    if name == "basic_ab":
        paths.append("/ab/v1/chat/completions")
    for path in paths:
        # No header in the match: a request without a key reaches the gateway, which answers in OpenAI's format.
        assert matches(only["match"], {"host": HOST, "path": path, "headers": {}}), (only["match"], path)
    assert only["services"] == [{"name": "llmserve-frontdoor", "port": PORTS["frontdoor"]}]
    names = [m["name"] for m in only["middlewares"]]
    expected = ["llm-errors"] + (["llm-ip-allow-list"] if name == "basic_ab" else []) + ["llm-rate-limit-address"]
    expected += ["llm-auth-" + mode] if mode != "api-key" else []
    expected += ["llm-gateway-auth", "llm-rate-limit"] + (["llm-in-flight"] if name != "forward_cookie" else [])
    assert names == expected
    assert _door_config(bundle)["auth_mode"] == mode
    if mode != "api-key":
        assert ("basicAuth" if mode == "basic" else "forwardAuth") in mws["llm-auth-" + mode]
    gateway = mws["llm-gateway-auth"]["forwardAuth"]
    assert gateway["address"] == "http://llmserve-frontdoor.llm-serving.svc.cluster.local:%d/auth" % PORTS["frontdoor_auth"]
    assert gateway["authResponseHeadersRegex"] == "^X-Llmserve-" and gateway["trustForwardHeader"] is False
    assert "Authorization" in gateway["authRequestHeaders"]
    assert mws["llm-rate-limit"]["rateLimit"]["sourceCriterion"] == {"requestHeaderName": "X-Llmserve-User"}
    assert "ipStrategy" in mws["llm-rate-limit-address"]["rateLimit"]["sourceCriterion"]
    errors = mws["llm-errors"]["errors"]
    assert errors == {"status": ["429", "502-504"], "service": {"name": "llmserve-frontdoor", "port": PORTS["frontdoor_auth"]},
                      "query": "/error/{status}"}
    for n in names:
        assert n in mws, "route references missing middleware " + n
    # Nothing buffers answers (streaming): no Buffering middleware and no StripPrefix (the front door strips).
    assert not [n for n, spec in mws.items() if "buffering" in spec or "stripPrefix" in spec]
    assert not _objects(bundle, "TraefikService")


@pytest.mark.parametrize("name", ALL)
def test_no_route_reaches_a_non_v1_vllm_path(name, request):
    bundle = request.getfixturevalue(name)
    route = _route_obj(bundle)
    config = _door_config(bundle)
    prefixes = ["", "/ab"] + ["/models/%s" % m for m in _enabled(bundle) or ["llama-3.1-8b", "mixtral-8x7b"]]
    for r in route["spec"]["routes"]:
        for prefix in prefixes:
            for path in DENIED:
                req = {"host": HOST, "path": prefix + path, "headers": BEARER}
                if matches(r["match"], req):
                    # Whatever matches must still reach a model on a /v1/ path after the front door's prefix strip.
                    forwarded = _door_path(prefix + path, config)
                    assert forwarded is None or forwarded.startswith("/v1/"), (r["match"], prefix + path)
        assert not matches(r["match"], {"host": "other.example", "path": "/v1/models", "headers": BEARER})


def test_front_door_serves_every_enabled_model_through_its_router_or_service(workstation, multinode):
    for bundle in (workstation, multinode):
        config = _door_config(bundle)
        names = _enabled(bundle)
        assert names and sorted(config["models"]) == names
        for model in names:
            service = "vllm-" + model.replace(".", "-")
            routers = [o for p, o in bundle[1].items() if p.startswith("models/%s/" % model)
                       and o["kind"] == "Service" and o["metadata"]["name"] == service + "-router"]
            # Several replicas: the model's vllm-router; one: the model's Service. Either way a Service the bundle has.
            expected = service + "-router" if routers else service
            assert config["models"][model]["url"] == "http://%s:%d" % (expected, PORTS["vllm"])
            assert [o for o in bundle[1].values() if o["kind"] == "Service" and o["metadata"]["name"] == expected]
    # A disabled catalog entry is not served (workstation: llama-3.1-8b-multi is disabled); multinode runs it on a router.
    assert "llama-3.1-8b-multi" not in _door_config(workstation)["models"]
    assert "llama-3.1-8b-multi" not in _route_obj(workstation)["spec"]["routes"][0]["match"]
    assert _door_config(multinode)["models"]["llama-3.1-8b-multi"] == {
        "url": "http://vllm-llama-3-1-8b-multi-router:%d" % PORTS["vllm"], "client_affinity": False,
        "fallback_url": "http://vllm-llama-3-1-8b-multi:%d" % PORTS["vllm"]}


def test_default_model_and_tls(workstation, basic_ab):
    assert _door_config(workstation)["default_model"] == ""  # a body without "model" gets 400
    assert _door_config(basic_ab)["default_model"] == "mixtral-8x7b"
    for bundle in (workstation, basic_ab):
        route = _route_obj(bundle)
        assert route["spec"]["tls"] == {"secretName": "llm-ingress-tls"}
        assert route["spec"]["entryPoints"] == ["websecure"]


def test_ab_test_is_a_weighted_choice_of_the_front_door(basic_ab):
    assert _door_config(basic_ab)["ab_tests"] == {"/ab": [{"model": "llama-3.1-8b", "weight": 90}, {"model": "mixtral-8x7b", "weight": 10}]}
    assert _door_path("/ab/v1/chat/completions", _door_config(basic_ab)) == "/v1/chat/completions"


def test_limits_and_allow_list_carry_the_configured_values(basic_ab, forward_cookie):
    mws = _middlewares(basic_ab)
    assert mws["llm-rate-limit"]["rateLimit"] == {
        "average": 5, "period": "1m", "burst": 10, "sourceCriterion": {"requestHeaderName": "X-Llmserve-User"},
        "redis": {"endpoints": ["llmserve-redis.llm-serving.svc.cluster.local:6379"], "db": 0,
                  "secret": "llmserve-redis-traefik"}}
    assert mws["llm-rate-limit-address"]["rateLimit"] == {
        "average": 50, "period": "1s", "burst": 100, "sourceCriterion": {"ipStrategy": {"depth": 1}}}
    assert mws["llm-in-flight"]["inFlightReq"] == {"amount": 8, "sourceCriterion": {"requestHeaderName": "X-Llmserve-User"}}
    assert _door_config(basic_ab)["max_request_body_bytes"] == 10485760
    assert _door_config(forward_cookie)["max_request_body_bytes"] == 65536
    assert mws["llm-ip-allow-list"]["ipAllowList"] == {"sourceRange": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
                                                       "ipStrategy": {"depth": 1}}
    basic = mws["llm-auth-basic"]["basicAuth"]
    assert basic["secret"] == "llm-basic-auth" and basic["removeHeader"] is True
    (hcc,) = _objects(basic_ab, "HelmChartConfig")
    values = hcc["spec"]["valuesContent"]
    assert "--entryPoints.web.http.redirections.entryPoint.scheme=https" in values
    assert "--entryPoints.websecure.forwardedHeaders.trustedIPs=192.0.2.0/24" in values
    assert hcc["metadata"] == {"name": "traefik", "namespace": "kube-system", "labels": hcc["metadata"]["labels"]}


def test_no_client_can_spoof_identity_headers(workstation, forward_cookie):
    """From Traefik 3.7.12 on its entry points drop aliased identity headers; the Traefik of the pinned k3s (3.7.8)
    refuses the option at start, so it is left out there (the front door drops them: tests/unit/test_frontdoor.py)."""
    for bundle, strategy in ((forward_cookie, "reject"), (workstation, None)):
        (hcc,) = _objects(bundle, "HelmChartConfig")
        args = yaml.safe_load(hcc["spec"]["valuesContent"])["additionalArguments"]
        found = [a for a in args if "aliasHeadersStrategy" in a]
        assert found == (["--entryPoints.%s.http.aliasHeadersStrategy=%s" % (e, strategy) for e in ("web", "websecure")]
                         if strategy else [])


def test_front_door_runs_the_shipped_script_with_a_config_it_accepts(workstation, tmp_path):
    (cm,) = [o for o in _objects(workstation, "ConfigMap") if o["metadata"]["name"] == "llmserve-frontdoor"]
    assert cm["data"]["llmserve_frontdoor.py"] == SCRIPT.read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("llmserve_frontdoor", SCRIPT)
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    (tmp_path / "config.json").write_text(cm["data"]["config.json"], encoding="utf-8")
    config = door.load_config(tmp_path / "config.json")
    assert {"http": config["listen"]["port"], "auth": config["auth"]["port"], "metrics": config["admin"]["port"]} == DOOR_PORTS
    assert config["identities_file"] == "/etc/llmserve-gateway/identities.json"
    (deployment,) = _objects(workstation, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/vllm/vllm-openai:v0.32.0"
    assert container["command"] == ["python3", "/etc/llmserve-frontdoor/llmserve_frontdoor.py", "/etc/llmserve-frontdoor/config.json"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == DOOR_PORTS
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "llmserve-frontdoor"}},
                              {"name": "identities", "secret": {"secretName": "llmserve-gateway-identities", "optional": True}}]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/etc/llmserve-frontdoor", "/etc/llmserve-gateway"]
    # Secrets reach it through the environment from the internal Secret, never the config, arguments or bundle.
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e} == {
        "LLMSERVE_INTERNAL_KEY": {"name": "llmserve-internal", "key": "vllm-api-key"},
        "LLMSERVE_SIGNING_KEY": {"name": "llmserve-internal", "key": "signing-key"}}
    # Rollouts: the pause, a grace period covering the longest answer, a pod ready before an old one stops.
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert pod["terminationGracePeriodSeconds"] >= 10 + config["drain_s"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    (pdb,) = _objects(workstation, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The memory limit is the one _gateway computes from the body limits the config carries.
    from ansible_collections.llmserve.k3s.plugins.module_utils import _gateway
    assert container["resources"]["limits"]["memory"] == "%dMi" % _gateway.frontdoor_memory_mib(
        config["max_request_body_bytes"], config["large_body_slots"], config["small_body_bytes"], config["max_in_flight"])
    # The pods the Service and the route reach are these.
    (service,) = _objects(workstation, "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == DOOR_PORTS


def test_forward_auth_and_cert_manager(forward_cookie):
    fwd = _middlewares(forward_cookie)["llm-auth-forward"]["forwardAuth"]
    assert fwd == {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth", "trustForwardHeader": True,
                   "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Groups"]}
    # The gateway reads the proxy's user and groups headers: Traefik passes them to its ForwardAuth.
    gateway = _middlewares(forward_cookie)["llm-gateway-auth"]["forwardAuth"]
    assert {"X-Auth-Request-User", "X-Auth-Request-Groups"} <= set(gateway["authRequestHeaders"])
    config = _door_config(forward_cookie)
    assert (config["user_header"], config["groups_header"]) == ("X-Auth-Request-User", "X-Auth-Request-Groups")
    (cert,) = _objects(forward_cookie, "Certificate")
    assert cert["spec"] == {"secretName": "llm-ingress-tls", "dnsNames": [HOST],
                            "issuerRef": {"name": "campus-ca", "kind": "ClusterIssuer"}}
    (hcc,) = _objects(forward_cookie, "HelmChartConfig")
    assert "redirections" not in hcc["spec"]["valuesContent"]
    # --tags ingress rendered the ingress component alone.
    assert {p.split("/")[0] for p in forward_cookie[1]} == {"ingress"}
