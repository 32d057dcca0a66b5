"""The bundled Traefik's flags and HelmChartConfig values (module_utils/_traefik.py, filters traefik_arguments and
traefik_values). Which flags each Traefik release accepts was read from Traefik's source (pkg/config/static/
entrypoints.go at each tag) and checked on the real binaries of 3.7.8 and 3.7.12; the integration test
tests/integration/test_traefik_entrypoints.py starts the pinned one with these flags."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.filter import llmserve
from ansible_collections.llmserve.k3s.plugins.module_utils import _traefik

ENCODED = ["Slash", "BackSlash", "NullCharacter", "Semicolon", "Percent", "QuestionMark", "Hash"]


def flags_for(entry_point, args):
    prefix = "--entryPoints.%s." % entry_point
    return {a[len(prefix):].split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith(prefix)}


def test_the_pinned_version_refuses_every_encoded_character_on_both_entry_points():
    args = _traefik.traefik_arguments({"version": "3.7.8"})
    for entry_point in ("web", "websecure"):
        flags = flags_for(entry_point, args)
        for name in ENCODED:
            assert flags["http.encodedCharacters.allowEncoded" + name] == "false", (entry_point, name)
        assert flags["http.sanitizePath"] == "true"
        assert flags["transport.respondingTimeouts.writeTimeout"] == "0s"
        assert "transport.respondingTimeouts.readTimeout" not in flags  # Traefik's 60s: it bounds the request only


def test_the_flags_the_template_set_before_are_kept():
    args = _traefik.traefik_arguments({"version": "3.7.8", "http_redirect": True, "trusted_ips": ["10.0.0.0/8", "192.0.2.1"]})
    assert args[:2] == ["--providers.kubernetescrd.allowCrossNamespace=true", "--metrics.prometheus.addRoutersLabels=true"]
    assert "--entryPoints.web.http.redirections.entryPoint.to=:443" in args
    assert "--entryPoints.web.http.redirections.entryPoint.scheme=https" in args
    assert "--entryPoints.web.http.redirections.entryPoint.permanent=true" in args
    assert not any(a.startswith("--entryPoints.websecure.http.redirections") for a in args)
    for entry_point in ("web", "websecure"):
        assert "--entryPoints.%s.forwardedHeaders.trustedIPs=10.0.0.0/8,192.0.2.1" % entry_point in args


def test_optional_flags_are_absent_by_default():
    args = _traefik.traefik_arguments({"http_redirect": False})
    assert not any("redirections" in a or "trustedIPs" in a or "proxyProtocol" in a for a in args)


def test_proxy_protocol_from_named_load_balancers_only():
    args = _traefik.traefik_arguments({"proxy_protocol_trusted_ips": ["192.0.2.10/32"]})
    assert "--entryPoints.websecure.proxyProtocol.trustedIPs=192.0.2.10/32" in args
    assert "--entryPoints.web.proxyProtocol.trustedIPs=192.0.2.10/32" in args
    assert not any("proxyProtocol.insecure" in a for a in args)


@pytest.mark.parametrize("version,option", [
    ("3.0.4", None), ("3.6.2", None), ("3.6.21", None), ("3.6.22", "underscoreHeadersStrategy"),
    ("3.7.0", None), ("3.7.5", None), ("3.7.6", "underscoreHeadersStrategy"), ("3.7.8", "underscoreHeadersStrategy"),
    ("3.7.11", "underscoreHeadersStrategy"), ("3.7.12", "aliasHeadersStrategy"), ("v3.8.0", "aliasHeadersStrategy"),
])
def test_the_header_strategy_option_follows_the_release(version, option):
    args = _traefik.traefik_arguments({"version": version, "alias_headers_strategy": "reject"})
    strategy = sorted({a.split(".http.")[1] for a in args if "HeadersStrategy" in a})
    assert strategy == ([option + "=reject"] if option else [])


RELEASES = [("3.3.0", False, False), ("3.4.0", False, True), ("3.6.2", False, True), ("3.6.3", True, True),
            ("3.7.0", True, True)]


@pytest.mark.parametrize("version,encoded,sanitize", RELEASES)
def test_older_releases_get_only_what_they_know(version, encoded, sanitize):
    args = _traefik.traefik_arguments({"version": version})
    assert any("encodedCharacters" in a for a in args) is encoded
    assert any("sanitizePath" in a for a in args) is sanitize


def test_values_preserve_the_client_address_on_every_node():
    values = _traefik.traefik_values({"version": "3.7.8"})
    assert values["additionalArguments"] == _traefik.traefik_arguments({"version": "3.7.8"})
    assert values["logs"] == {"access": {"enabled": True}}
    assert values["service"] == {"spec": {"externalTrafficPolicy": "Local"}}
    assert values["deployment"] == {"kind": "DaemonSet"}


@pytest.mark.parametrize("chart,key,value", [
    ("40.1.4+up40.1.0", "logs", {"access": {"enabled": True}}),    # k3s 1.35/1.36: upstream chart 40.1.0
    ("41.4.2+up41.4.0", "accessLog", {"enabled": True}),            # k3s 1.37: upstream 41 renamed the key
    ("v41.3.0", "accessLog", {"enabled": True}),
])
def test_access_logs_in_the_chart_versions_own_words(chart, key, value):
    """Each chart's values.schema.json refuses the other's key (checked with jsonschema against upstream 40.1.0 and
    41.3.0), and Helm validates values against it: the wrong one would fail k3s' install job."""
    values = _traefik.traefik_values({"chart_version": chart})
    assert values[key] == value
    assert not {"logs", "accessLog"} - {key} & set(values)


def test_values_follow_the_settings():
    values = _traefik.traefik_values({"external_traffic_policy": "Cluster", "kind": "Deployment"})
    assert values["service"]["spec"]["externalTrafficPolicy"] == "Cluster"
    assert values["deployment"]["kind"] == "Deployment"


@pytest.mark.parametrize("settings,variable", [
    ({"version": "latest"}, "ingress_traefik_version"),
    ({"version": "2.11.10"}, "ingress_traefik_version"),
    ({"alias_headers_strategy": "drop"}, "ingress_alias_headers_strategy"),
    ({"external_traffic_policy": "local"}, "ingress_traefik_external_traffic_policy"),
    ({"kind": "StatefulSet"}, "ingress_traefik_kind"),
    ({"trusted_ips": "10.0.0.0/8"}, "ingress_trusted_ips"),
    ({"proxy_protocol_trusted_ips": [""]}, "ingress_traefik_proxy_protocol_trusted_ips"),
    ({"max_answer_s": 900}, "unknown Traefik settings max_answer_s"),
    ({"chart_version": "latest"}, "ingress_traefik_chart_version"),
])
def test_bad_settings_name_the_variable(settings, variable):
    with pytest.raises(ValueError, match=variable):
        _traefik.traefik_values(settings)


def test_the_filters_wrap_the_functions_and_their_errors():
    filters = llmserve.FilterModule().filters()
    assert filters["traefik_arguments"]({"version": "3.7.8"}) == _traefik.traefik_arguments({"version": "3.7.8"})
    assert filters["traefik_values"]() == _traefik.traefik_values()
    with pytest.raises(AnsibleFilterError, match="ingress_traefik_kind"):
        filters["traefik_values"]({"kind": "Pod"})
