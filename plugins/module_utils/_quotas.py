# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Token and request quotas per group (llmserve_quotas) -> the front door's quota rules. Pure logic, stdlib only.

llmserve_quotas maps a group name to its limits; the key `default` holds the limits of the identities in no group
that has a quota. Every problem is a message naming the variable, the field and the fix (printed by the ingress
preflight before anything is written); quota_rules() turns checked quotas into the rules of the front door's config.
"""

from __future__ import annotations

import difflib

from ansible_collections.llmserve.k3s.plugins.module_utils import _identity

VAR = "llmserve_quotas"
DEFAULT = "default"
# The limits a quota may set, each a whole number >= 0 (0 blocks); a limit not set is unlimited.
LIMITS = ("tokens_per_day", "tokens_per_hour", "requests_per_minute", "in_flight")
PER = ("user", "group")
FIELDS = LIMITS + ("per",)
ON_REDIS_ERROR = ("allow", "deny")
EXAMPLE = "{students: {tokens_per_day: 200000, requests_per_minute: 30}, default: {tokens_per_day: 100000}}"


def _field_errors(where, quota):
    errors = []
    if not isinstance(quota, dict):
        return ["%s: %s, not a mapping. Fix: write the group's limits as a mapping, e.g. {tokens_per_day: 100000}"
                % (where, _identity._kind(quota))]  # pylint: disable=protected-access
    for field in sorted(quota, key=str):
        value = quota[field]
        if field not in FIELDS:
            hint = difflib.get_close_matches(str(field), FIELDS, n=1, cutoff=0.6)
            errors.append("%s.%s: unknown field. Fix: %suse only %s"
                          % (where, field, "did you mean %s? " % hint[0] if hint else "", ", ".join(FIELDS)))
        elif field == "per":
            if value not in PER:
                errors.append("%s.per is %r. Fix: use user (each member has the limit) or group (members share it)"
                              % (where, value))
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append("%s.%s is %r: not a whole number >= 0. Fix: write a number such as 100000 (0 blocks; leave "
                          "the field out for no limit)" % (where, field, value))
    return errors


def known_groups(auth_mode, api_keys=None, basic_users=None):
    """The groups identities can have, sorted; None where any group name may occur (forward: the SSO proxy names
    them) or where the identities are not given (a render without keys or users: nothing to check them against)."""
    if auth_mode == "forward":
        return None
    if auth_mode == "none":
        return []
    entries = (_identity.check_api_keys(api_keys)[0] if auth_mode == "api-key"
               else _identity.check_basic_users(basic_users)[0])
    if not entries:
        return None
    return sorted(set(g for entry in entries for g in entry["groups"]))


def quota_errors(quotas, groups=None, on_redis_error="allow", auth_mode="api-key"):
    """Every problem of llmserve_quotas and llmserve_quota_on_redis_error ([] when all is well). groups: the group
    names identities have (known_groups()), None to accept any valid name."""
    errors = []
    if on_redis_error not in ON_REDIS_ERROR:
        errors.append("llmserve_quota_on_redis_error is %r. Fix: use allow (serve and count nothing while Redis is "
                      "down) or deny (answer 503)" % (on_redis_error,))
    if quotas is None or quotas == {}:
        return errors
    if not isinstance(quotas, dict):
        return errors + ["%s: %s, not a mapping. Fix: map group names to limits, e.g. %s"
                         % (VAR, _identity._kind(quotas), EXAMPLE)]  # pylint: disable=protected-access
    for name in sorted(quotas, key=str):
        where = "%s.%s" % (VAR, name)
        errors.extend(_field_errors(where, quotas[name]))
        if name == DEFAULT:
            if isinstance(quotas[name], dict) and quotas[name].get("per", "user") == "group":
                errors.append("%s.per is 'group': the default applies to each identity in no quota group on its own. "
                              "Fix: leave per out (user), or give those identities a group and a quota for it" % where)
            continue
        if not isinstance(name, str) or not _identity.NAME.match(name):
            errors.append("%s: %r is not a group name. Fix: use %s, or the key default for identities in no quota group"
                          % (VAR, name, _identity.NAME_RULE))
        elif groups is not None and name not in groups:
            have = ("no identity has a group in auth mode none (each client address is its own identity): only "
                    "default applies" if auth_mode == "none"
                    else "no identity has this group (known groups: %s)" % (", ".join(groups) or "none"))
            errors.append("%s: %s. Fix: add the group to the identities (llmserve_api_keys / llmserve_basic_auth_users "
                          "groups), or remove the quota" % (where, have))
    return errors


def quota_rules(quotas):
    """The front door's quota rules of checked llmserve_quotas: one per group, sorted by name, then the default; each
    {group | default: true, per, <the limits set>}."""
    rules = []
    for name in sorted(k for k in (quotas or {}) if k != DEFAULT):
        rules.append(_rule({"group": name}, quotas[name]))
    if DEFAULT in (quotas or {}):
        rules.append(_rule({"default": True}, quotas[DEFAULT]))
    return rules


def _rule(head, quota):
    rule = dict(head, per=(quota or {}).get("per", "user"))
    rule.update((field, int(quota[field])) for field in LIMITS if field in (quota or {}))
    return rule
