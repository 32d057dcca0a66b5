"""llmserve_quotas checked and turned into the front door's rules (plugins/module_utils/_quotas.py)."""

from __future__ import annotations

import pytest

from ansible_collections.llmserve.k3s.plugins.module_utils import _quotas

KEYS = [{"name": "alice", "key": "a" * 32, "groups": ["students", "physics"]},
        {"name": "bob", "key": "b" * 32, "groups": ["staff"]}, "c" * 32]
USERS = [{"name": "carol", "password": "long-enough", "groups": ["lab"]}]


def test_known_groups_by_auth_mode():
    assert _quotas.known_groups("api-key", KEYS, USERS) == ["physics", "staff", "students"]
    assert _quotas.known_groups("basic", KEYS, USERS) == ["lab"]
    # The SSO proxy names the groups; without keys or users (a render only) there is nothing to check against.
    assert _quotas.known_groups("forward", KEYS, USERS) is None
    assert _quotas.known_groups("api-key", [], USERS) is None
    assert _quotas.known_groups("none", KEYS, USERS) == []


@pytest.mark.parametrize("quotas", [
    {}, None,
    {"students": {"tokens_per_day": 0}, "staff": {}, "default": {"requests_per_minute": 10, "per": "user"}},
    {"physics": {"per": "group", "in_flight": 2, "tokens_per_hour": 1}},
])
def test_valid_quotas_pass(quotas):
    assert _quotas.quota_errors(quotas, ["physics", "staff", "students"]) == []


@pytest.mark.parametrize("quotas, groups, expected", [
    ({"students": {"tokens_per_dya": 5}}, None,
     "llmserve_quotas.students.tokens_per_dya: unknown field. Fix: did you mean tokens_per_day?"),
    ({"students": {"tokens_per_day": -1}}, None, "llmserve_quotas.students.tokens_per_day is -1: not a whole number >= 0"),
    ({"students": {"tokens_per_day": 1.5}}, None, "llmserve_quotas.students.tokens_per_day is 1.5"),
    ({"students": {"tokens_per_day": "100"}}, None, "llmserve_quotas.students.tokens_per_day is '100'"),
    ({"students": {"in_flight": True}}, None, "llmserve_quotas.students.in_flight is True"),
    ({"students": {"per": "team"}}, None, "llmserve_quotas.students.per is 'team'. Fix: use user"),
    ({"students": 100}, None, "llmserve_quotas.students: a number, not a mapping"),
    ({"bad group!": {}}, None, "llmserve_quotas: 'bad group!' is not a group name"),
    ({"chemistry": {"tokens_per_day": 1}}, ["physics"],
     "llmserve_quotas.chemistry: no identity has this group (known groups: physics). Fix: add the group"),
    ({"default": {"per": "group"}}, None, "llmserve_quotas.default.per is 'group'"),
    ([{"students": 1}], None, "llmserve_quotas: a list, not a mapping"),
])
def test_bad_quotas_name_the_field_and_the_fix(quotas, groups, expected):
    errors = _quotas.quota_errors(quotas, groups)
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert "Fix:" in errors[0]


def test_a_group_quota_in_mode_none_is_refused_and_the_default_is_not():
    errors = _quotas.quota_errors({"staff": {}, "default": {"tokens_per_day": 5}}, [], auth_mode="none")
    assert errors == ["llmserve_quotas.staff: no identity has a group in auth mode none (each client address is its own "
                      "identity): only default applies. Fix: add the group to the identities (llmserve_api_keys / "
                      "llmserve_basic_auth_users groups), or remove the quota"]


def test_on_redis_error_is_allow_or_deny():
    assert _quotas.quota_errors({}, None, "deny") == []
    (error,) = _quotas.quota_errors({}, None, "fail")
    assert error.startswith("llmserve_quota_on_redis_error is 'fail'. Fix: use allow")


def test_rules_sorted_by_group_default_last_unset_limits_absent():
    rules = _quotas.quota_rules({"default": {"tokens_per_day": 100}, "zeta": {"per": "group", "in_flight": 0},
                                 "alpha": {}})
    assert rules == [{"group": "alpha", "per": "user"}, {"group": "zeta", "per": "group", "in_flight": 0},
                     {"default": True, "per": "user", "tokens_per_day": 100}]
    assert _quotas.quota_rules({}) == [] and _quotas.quota_rules(None) == []
