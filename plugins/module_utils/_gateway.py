# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ingress template renders for the gateway (the front door) and the Traefik route in front of it.

Pure logic, stdlib only: the middleware chain of the llm-api route, the front door's config.json, and the front
door's memory limit from its body limits. The template only writes these out.
"""

from __future__ import annotations

import hashlib
import json
import math

from ansible_collections.llmserve.k3s.plugins.module_utils import _guard, _quotas, _shared, _tracing

MIB = 1024 ** 2
# The front door process itself (Python, aiohttp, the config) before any body: measured RSS of an idle front door in
# the vLLM image's Python is about 45 MiB; the rest is headroom for the event loop's buffers and TLS-free sockets.
BASE_MIB = 96
# Each worker process when there are several (beside the supervisor, which BASE_MIB covers): the interpreter with
# aiohttp and uvloop, measured at 42 MiB resident, its shared libraries counted once in the pod's memory.
WORKER_MIB = 48
# The identity header the gateway's /auth sets and Traefik's per-identity limiters count on.
IDENTITY_HEADER = "X-Llmserve-User"


def middleware_chain(auth_mode, ip_allow_list, in_flight_enabled):
    """Names of the llm-api route's middlewares, outermost first: errors page, who may connect, how often per address
    (before anyone is known), who they are, how often and how many at once per identity."""
    chain = ["llm-errors"]
    if ip_allow_list:
        chain.append("llm-ip-allow-list")
    chain.append("llm-rate-limit-address")
    if auth_mode in ("basic", "forward"):
        chain.append("llm-auth-" + auth_mode)
    chain.append("llm-gateway-auth")
    chain.append("llm-rate-limit")
    if in_flight_enabled:
        chain.append("llm-in-flight")
    return chain


def route_prefixes(ab_path=None):
    """The path prefixes Traefik sends to the front door: everything under the API's roots, so that the front door
    (not Traefik) answers an unknown path there, in OpenAI's format."""
    return [_shared.API_ROOT + "/", _shared.MODELS_ROOT + "/"] + ([ab_path.rstrip("/") + "/"] if ab_path else [])


def api_route(host, prefixes, chain, port):
    """The llm-api IngressRoute's one route: the host's API prefixes (route_prefixes) through the middleware chain
    (middleware_chain, outermost first) to the front door's Service on port."""
    paths = " || ".join("PathPrefix(`%s`)" % prefix for prefix in prefixes)
    return {"kind": "Rule", "match": "Host(`%s`) && (%s)" % (host, paths),
            "middlewares": [{"name": name} for name in chain],
            "services": [{"name": "llmserve-frontdoor", "port": int(port)}]}


def auth_request_headers(user_header="X-Forwarded-User", groups_header="X-Forwarded-Groups"):
    """The request headers Traefik passes to the gateway's /auth: the key, the client's address as Traefik saw it,
    and the identity headers an SSO proxy (forward mode) or Traefik's BasicAuth (basic mode) sets; each once."""
    headers = []
    for header in ("Authorization", "X-Real-Ip", "X-Forwarded-For", user_header, groups_header):
        if header not in headers:
            headers.append(header)
    return headers


def config_checksum(script, config):
    """sha256 of the front door's script and config (the pods' annotation: a change of either rolls them)."""
    return hashlib.sha256((script + json.dumps(config)).encode("utf-8", "surrogateescape")).hexdigest()


def frontdoor_resources(resources, memory_mib):
    """The front door container's resources: the role's, with the memory limit frontdoor_memory_mib worked out."""
    out = dict(resources or {})
    out["limits"] = dict(out.get("limits") or {}, memory="%dMi" % int(memory_mib))
    return out


def frontdoor_backend(model, port=_shared.PORTS["vllm"]):
    """The front door's config entry of one served model (an item of llmserve_plan.models): its router when it has
    one, with the model's own Service as the fallback while the router cannot be reached, and the names of its LoRA
    adapters (served_names)."""
    entry = {"url": "http://%s:%d" % (model["backend_service"], int(port)),
             "client_affinity": bool(model.get("router_enabled") and model.get("session_affinity"))}
    if model.get("router_enabled"):
        entry["fallback_url"] = "http://%s:%d" % (model["k8s_name"], int(port))
    # The model's LoRA adapters: a client names one as its model, and the base model's backend serves it.
    adapters = [a["name"] for a in (model.get("lora") or {}).get("adapters", [])]
    if adapters:
        entry["served_names"] = adapters
    return entry


def frontdoor_config(models, settings):
    """The front door's config.json: the plan's models and the ingress role's settings (a dict with the keys read
    below). Secrets are not in it: they come from the environment and the identities file."""
    config = {
        "listen": {"host": "0.0.0.0", "port": int(settings["port"])},
        "auth": {"host": "0.0.0.0", "port": int(settings["auth_port"])},
        "admin": {"host": "0.0.0.0", "port": int(settings["metrics_port"])},
        "auth_mode": settings["auth_mode"],
        "identities_file": settings["identities_file"],
        "models": dict((m["name"], frontdoor_backend(m, settings["model_port"])) for m in models),
        "default_model": settings["default_model"],
        "max_request_body_bytes": int(settings["max_request_body_bytes"]),
        "small_body_bytes": int(settings["small_body_bytes"]),
        "large_body_slots": int(settings["large_body_slots"]),
        "max_in_flight": int(settings["max_in_flight"]),
        "body_timeout_s": int(settings["body_timeout_s"]),
        "read_timeout_s": int(settings["read_timeout_s"]),
        "drain_s": int(settings["max_answer_s"]),
        "workers": int(settings.get("workers", 1)),
        "ab_tests": {},
    }
    if settings["auth_mode"] == "forward":
        config["user_header"] = settings["forward_user_header"]
        config["groups_header"] = settings["forward_groups_header"]
    ab_test = settings.get("ab_test") or {}
    if ab_test.get("enabled"):
        config["ab_tests"] = {ab_test["path"]: ab_test["backends"]}
    config["usage"] = {"enabled": bool(settings.get("usage_enabled", True)),
                       "user_series": int(settings.get("usage_user_series", 1000)),
                       "log": bool(settings.get("usage_log", True))}
    guard = _guard.frontdoor_guard(settings.get("guard"))
    if guard:
        config["guard"] = guard
        for name, backend in config["models"].items():
            if _guard.hidden(settings["guard"], name):
                backend["hidden"] = True
    if settings.get("quotas"):
        config["quotas"] = {"rules": _quotas.quota_rules(settings["quotas"]),
                            "on_redis_error": settings.get("quota_on_redis_error", "allow"),
                            "redis": redis_address(settings["redis"])}
    tracing = _tracing.frontdoor_tracing(settings.get("tracing"))
    if tracing is not None:
        config["tracing"] = tracing
    return config


def redis_address(redis):
    """The front door's Redis entry of the ingress role's settings {namespace, port, db, timeout_s}: the in-cluster
    Service llmserve-redis; the password comes from the environment (LLMSERVE_REDIS_PASSWORD), never the config."""
    return {"host": "llmserve-redis.%s.svc.cluster.local" % redis["namespace"], "port": int(redis.get("port", 6379)),
            "db": int(redis.get("db", 0)), "timeout_s": float(redis.get("timeout_s", 0.5))}


def frontdoor_memory_mib(max_request_body_bytes, large_body_slots, small_body_bytes, max_in_flight, workers=1):
    """The front door's memory limit in MiB: its processes, plus every body it may hold at once, twice (the chunks and
    the joined body are both alive while a body is read): large ones only in their slots, small ones up to the
    in-flight cap. Several workers share the slots and the cap out, each its part rounded up (as the front door does),
    and each is a process of its own. Rounded up to 32 MiB."""
    workers = int(workers)
    slots = workers * -(-int(large_body_slots) // workers)
    in_flight = workers * -(-int(max_in_flight) // workers)
    held = 2 * (slots * int(max_request_body_bytes) + in_flight * int(small_body_bytes))
    processes = BASE_MIB + (workers * WORKER_MIB if workers > 1 else 0)
    return int(math.ceil((processes + held / float(MIB)) / 32.0) * 32)
