"""The ingress bundle, rendered by the real playbook in the default and in non-default configurations.

Traefik itself does not run here: the routes are checked as data (CRD schemas of Traefik v3.7 and helm-controller,
rule expressions evaluated against request paths, StripPrefix applied to them) - not by sending requests.
"""

from __future__ import annotations

import pytest

from k8s_schema import validate
from traefik_rules import matches, strip_prefixes

HOST = "llm.university.local"
ALLOWED = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings"]
DENIED = ["/metrics", "/health", "/pause", "/resume", "/abort_requests", "/update_weights", "/docs", "/openapi.json",
          "/version", "/ping", "/tokenize", "/v1", "/v10/x", "/load", "/is_sleeping", "/sleep", "/wake_up",
          "/collective_rpc", "/reset_prefix_cache", "/server_info", "/invocations", "/scale_elastic_ep"]
BEARER = {"Authorization": "Bearer sk-test-0123456789abcdef"}


# The module's bundles: (inventory, extra vars, tags).
RENDERS = {
    # Workstation with BasicAuth, an allow list, a per-user Redis-backed limit, an A/B test and another default model.
    "basic-ab": ("inventories/workstation", {
        "llmserve_auth_mode": "basic",
        "ingress_ip_allow_list": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
        "ingress_trusted_ips": ["192.0.2.0/24"],
        "ingress_rate_limit": {"average": 5, "period": "1m", "burst": 10, "source": "auth-header", "ip_depth": 1},
        "ingress_rate_limit_redis": {"endpoints": ["redis.traefik.svc:6379"], "secret": "redis-auth", "db": 2},
        "ingress_ab_test": {"enabled": True, "path": "/ab", "backends": [
            {"model": "llama-3.1-8b", "weight": 90}, {"model": "mixtral-8x7b", "weight": 10}]},
        "llmserve_ingress_default_model": "mixtral-8x7b",
    }, None),
    # Multinode, ForwardAuth to an SSO proxy, cookie affinity, no in-flight/buffering; ingress component alone.
    "forward": ("inventories/multinode", {
        "llmserve_auth_mode": "forward",
        "ingress_forward_auth": {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth", "trust_forward_header": True,
                                 "response_headers": ["X-Auth-Request-User"]},
        "ingress_session_affinity": "cookie",
        "ingress_in_flight": {"enabled": False, "amount": 1},
        "ingress_buffering": {"enabled": False, "max_request_body_bytes": 1},
        "ingress_http_redirect": False,
        "llmserve_ingress_tls_mode": "cert-manager",
        "ingress_cert_manager_issuer": "campus-ca",
    }, "ingress"),
}


def _render(renders, name, inventory, extra_vars, tags=None):
    return renders.bundle(inventory, extra_vars, tags, label=name)


@pytest.fixture(scope="module", autouse=True)
def _prefetch(renders):
    """Both bundles of the module render in the background from its first test on."""
    for name, (inventory, extra, tags) in RENDERS.items():
        renders.prefetch(inventory, extra, tags, label=name)


@pytest.fixture(scope="module")
def basic_ab(renders):
    """Workstation with BasicAuth, an allow list, a per-user Redis-backed limit, an A/B test and another default model."""
    return _render(renders, "basic-ab", *RENDERS["basic-ab"])


@pytest.fixture(scope="module")
def forward_cookie(renders):
    """Multinode, ForwardAuth to an SSO proxy, cookie affinity, no in-flight/buffering; ingress component alone."""
    return _render(renders, "forward", *RENDERS["forward"])



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
    assert {"IngressRoute", "Middleware", "HelmChartConfig"} <= {o["kind"] for o in objects.values()}
    errors = {p: e for p, o in objects.items() if (e := validate(o))}
    assert errors == {}


@pytest.mark.parametrize("name", ALL)
def test_every_route_has_rate_limit_and_authentication(name, request):
    bundle = request.getfixturevalue(name)
    route = _route_obj(bundle)
    mws = _middlewares(bundle)
    mode = {"basic_ab": "basic", "forward_cookie": "forward"}.get(name, "api-key")
    assert route["spec"]["routes"], "no routes"
    for r in route["spec"]["routes"]:
        names = [m["name"] for m in r["middlewares"]]
        assert "rateLimit" in mws[names[names.index("llm-rate-limit")]]
        if mode == "api-key":
            # vLLM checks the key; Traefik refuses requests without a bearer token before they reach it.
            path = r["match"].split("PathPrefix(`")[1].split("`")[0] + "models"
            assert matches(r["match"], {"host": HOST, "path": path, "headers": BEARER})
            for headers in ({}, {"Authorization": "Basic YWxpY2U6eA=="}, {"Authorization": "Bearer "}):
                assert not matches(r["match"], {"host": HOST, "path": path, "headers": headers}), (r["match"], headers)
        else:
            auth = "llm-auth-" + mode
            assert auth in names and names.index(auth) > names.index("llm-rate-limit")
            assert ("basicAuth" if mode == "basic" else "forwardAuth") in mws[auth]
        if name == "basic_ab":
            assert names[0] == "llm-ip-allow-list"
        if name != "forward_cookie":
            assert {"llm-in-flight", "llm-buffering"} <= set(names)
        for n in names:
            assert n in mws, "route references missing middleware " + n


@pytest.mark.parametrize("name", ALL)
def test_no_route_reaches_a_non_v1_vllm_path(name, request):
    bundle = request.getfixturevalue(name)
    route = _route_obj(bundle)
    mws = _middlewares(bundle)
    prefixes = ["", "/ab"] + ["/models/%s" % m for m in _enabled(bundle) or ["llama-3.1-8b", "mixtral-8x7b"]]
    for r in route["spec"]["routes"]:
        strip = [p for n in r["middlewares"] for p in mws[n["name"]].get("stripPrefix", {}).get("prefixes", [])]
        for prefix in prefixes:
            for path in DENIED:
                req = {"host": HOST, "path": prefix + path, "headers": BEARER}
                if matches(r["match"], req):
                    # Whatever matches must still reach vLLM on a /v1/ path after StripPrefix.
                    assert strip_prefixes(prefix + path, strip).startswith("/v1/"), (r["match"], prefix + path)
        assert not matches(r["match"], {"host": "other.example", "path": "/v1/models", "headers": BEARER})


def test_every_enabled_model_has_its_strip_prefix_route(workstation, multinode):
    for bundle in (workstation, multinode):
        route = _route_obj(bundle)
        mws = _middlewares(bundle)
        names = _enabled(bundle)
        assert names
        for model in names:
            path = "/models/%s/v1/chat/completions" % model
            hits = [r for r in route["spec"]["routes"] if matches(r["match"], {"host": HOST, "path": path, "headers": BEARER})]
            assert len(hits) == 1, (model, hits)
            (hit,) = hits
            assert hit["services"][0]["name"] == "vllm-" + model.replace(".", "-")
            assert hit["services"][0]["port"] == 8000
            strip = [p for n in hit["middlewares"] for p in mws[n["name"]].get("stripPrefix", {}).get("prefixes", [])]
            assert strip == ["/models/" + model]
            assert strip_prefixes(path, strip) == "/v1/chat/completions"
        # A disabled catalog entry gets no route (workstation: llama-3.1-8b-multi is disabled).
        routed = {r["services"][0]["name"] for r in route["spec"]["routes"]}
        assert routed <= {"vllm-" + n.replace(".", "-") for n in names} | {"llm-ab-test"}
    assert not any("llama-3.1-8b-multi" in r["match"] for r in _route_obj(workstation)["spec"]["routes"])


def test_root_v1_goes_to_the_default_model(workstation, basic_ab):
    for bundle, default in ((workstation, "llama-3.1-8b"), (basic_ab, "mixtral-8x7b")):
        route = _route_obj(bundle)
        hits = [r for r in route["spec"]["routes"] if matches(r["match"], {"host": HOST, "path": "/v1/models", "headers": BEARER})]
        assert len(hits) == 1
        assert hits[0]["services"] == [{"name": "vllm-" + default.replace(".", "-"), "port": 8000}]
        assert route["metadata"]["annotations"]["llmserve.io/default-model"] == default
        assert route["spec"]["tls"] == {"secretName": "llm-ingress-tls"}
        assert route["spec"]["entryPoints"] == ["websecure"]


def test_ab_test_is_a_weighted_traefik_service(basic_ab):
    (svc,) = _objects(basic_ab, "TraefikService")
    assert svc["spec"]["weighted"]["services"] == [
        {"name": "vllm-llama-3-1-8b", "port": 8000, "weight": 90}, {"name": "vllm-mixtral-8x7b", "port": 8000, "weight": 10}]
    route = _route_obj(basic_ab)
    hits = [r for r in route["spec"]["routes"] if matches(r["match"], {"host": HOST, "path": "/ab/v1/chat/completions"})]
    assert len(hits) == 1 and hits[0]["services"] == [{"name": "llm-ab-test", "kind": "TraefikService"}]
    assert _middlewares(basic_ab)["strip-ab-test"]["stripPrefix"]["prefixes"] == ["/ab"]


def test_limits_and_allow_list_carry_the_configured_values(basic_ab):
    mws = _middlewares(basic_ab)
    assert mws["llm-rate-limit"]["rateLimit"] == {
        "average": 5, "period": "1m", "burst": 10, "sourceCriterion": {"requestHeaderName": "Authorization"},
        "redis": {"endpoints": ["redis.traefik.svc:6379"], "db": 2, "secret": "redis-auth"}}
    assert mws["llm-in-flight"]["inFlightReq"] == {"amount": 8, "sourceCriterion": {"requestHeaderName": "Authorization"}}
    assert mws["llm-buffering"]["buffering"] == {"maxRequestBodyBytes": 10485760}
    assert mws["llm-ip-allow-list"]["ipAllowList"] == {"sourceRange": ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"],
                                                       "ipStrategy": {"depth": 1}}
    basic = mws["llm-auth-basic"]["basicAuth"]
    assert basic["secret"] == "llm-basic-auth" and basic["removeHeader"] is True
    (hcc,) = _objects(basic_ab, "HelmChartConfig")
    values = hcc["spec"]["valuesContent"]
    assert "--entryPoints.web.http.redirections.entryPoint.scheme=https" in values
    assert "--entryPoints.websecure.forwardedHeaders.trustedIPs=192.0.2.0/24" in values
    assert hcc["metadata"] == {"name": "traefik", "namespace": "kube-system", "labels": hcc["metadata"]["labels"]}


def test_multi_replica_model_keeps_clients_on_one_replica(multinode, forward_cookie):
    # Traefik balances over the pod endpoints itself, so the Service's ClientIP affinity does not apply through it.
    svc = [r for r in _route_obj(multinode)["spec"]["routes"] if "/models/llama-3.1-8b-multi/" in r["match"]][0]["services"][0]
    assert svc == {"name": "vllm-llama-3-1-8b-multi", "port": 8000, "strategy": "hrw"}
    plain = [r for r in _route_obj(multinode)["spec"]["routes"] if "/models/mixtral-8x7b/" in r["match"]][0]["services"][0]
    assert "strategy" not in plain and "sticky" not in plain
    svc = [r for r in _route_obj(forward_cookie)["spec"]["routes"] if "/models/llama-3.1-8b-multi/" in r["match"]][0]["services"][0]
    assert svc["sticky"]["cookie"]["name"] == "llmserve_affinity" and svc["sticky"]["cookie"]["secure"] is True


def test_forward_auth_and_cert_manager(forward_cookie):
    fwd = _middlewares(forward_cookie)["llm-auth-forward"]["forwardAuth"]
    assert fwd == {"address": "http://oauth2-proxy.auth.svc:4180/oauth2/auth", "trustForwardHeader": True,
                   "authResponseHeaders": ["X-Auth-Request-User"]}
    (cert,) = _objects(forward_cookie, "Certificate")
    assert cert["spec"] == {"secretName": "llm-ingress-tls", "dnsNames": [HOST],
                            "issuerRef": {"name": "campus-ca", "kind": "ClusterIssuer"}}
    (hcc,) = _objects(forward_cookie, "HelmChartConfig")
    assert "redirections" not in hcc["spec"]["valuesContent"]
    # --tags ingress rendered the ingress component alone.
    assert {p.split("/")[0] for p in forward_cookie[1]} == {"ingress"}
