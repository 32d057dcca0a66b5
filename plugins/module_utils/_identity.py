# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""API keys and basic-auth users -> named identities, and the gateway's identities document. Pure logic, stdlib only.

`llmserve_api_keys` entries are a key (a string: its name is generated from its hash) or {name, key, groups};
`llmserve_basic_auth_users` entries are {name, password, groups}. Every problem is a message that names the field,
the bad value and the fix, and never holds a key or a password: the messages are printed by a preflight assert.
The gateway gets hashes only (identities.json), never a key in clear.
"""

from __future__ import annotations

import difflib
import hashlib
import re

# An identity or group name: the gateway's X-Llmserve-User / X-Llmserve-Groups values and a metrics label.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
NAME_RULE = "1 to 63 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
KEY = re.compile(r"^[!-~]+$")
MIN_KEY_LENGTH = 16
PASSWORD_LENGTH = (8, 72)  # bcrypt uses the first 72 bytes only
KEY_FIELDS = ("name", "key", "groups")
USER_FIELDS = ("name", "password", "groups")
API = "llmserve_api_keys"
BASIC = "llmserve_basic_auth_users"
NEW_KEY = "generate one with: openssl rand -hex 32"


def key_sha256(key):
    """Hex SHA-256 of a key's UTF-8 bytes: what the gateway compares (constant-time) with the hash of the key it got."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generated_name(key):
    """The name of a key given as a plain string: key-<first 8 hex digits of its SHA-256>."""
    return "key-" + key_sha256(key)[:8]


def _kind(value):
    """What a value is, in words (never the value: it may be a secret)."""
    for cls, words in ((bool, "a boolean"), (str, "a string"), (dict, "a mapping"), (list, "a list"), ((int, float), "a number")):
        if isinstance(value, cls):
            return words
    return "empty (null)" if value is None else "a " + type(value).__name__


def _shown(value, limit=64):
    """repr of a value that is printed (names, groups), cut to limit characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + "...'"


def _field_name(field):
    """A field name, printed only where it cannot be a key (keys are 16 or more characters long)."""
    if isinstance(field, str) and len(field) < MIN_KEY_LENGTH and re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", field):
        return field
    return None


class _Errors(list):
    def add(self, where, problem, fix):
        self.append("%s: %s. Fix: %s." % (where, problem, fix))


def _check_unknown(errors, where, entry, known):
    for field in entry:
        if field in known:
            continue
        shown = _field_name(field)
        hint = difflib.get_close_matches(shown, known, n=1, cutoff=0.6) if shown else []
        errors.add("%s.%s" % (where, shown) if shown else where,
                   "unknown field" if shown else "a field that is not %s (its name is not shown: it could be a secret)" % ", ".join(known),
                   ("did you mean %s? " % hint[0] if hint else "") + "use only the fields " + ", ".join(known))


def _check_name(errors, where, name, what):
    if name is None:
        errors.add(where, "missing", "give every %s a name (%s)" % (what, NAME_RULE))
    elif not isinstance(name, str):
        errors.add(where, "%s, not a name" % _kind(name), "write the name as a string (%s)" % NAME_RULE)
    elif not NAME.match(name):
        errors.add(where, "%s is not a name" % _shown(name), "use " + NAME_RULE)
    else:
        return True
    return False


def _groups(errors, where, groups):
    """The entry's groups, in order without repeats; the problems go to errors."""
    if groups is None:
        return []
    if not isinstance(groups, list):
        errors.add(where, "%s, not a list" % _kind(groups), "write groups as a list of names, e.g. groups: [staff, physics]")
        return []
    out = []
    for index, group in enumerate(groups):
        if not isinstance(group, str) or not NAME.match(group):
            errors.add("%s[%d]" % (where, index), "%s is not a group name" % (_shown(group) if isinstance(group, str) else _kind(group)),
                       "use " + NAME_RULE)
        elif group not in out:
            out.append(group)
    return out


def _duplicates(errors, entries, var, what):
    """A name used twice is an error at each later use."""
    first = {}
    for index, name in entries:
        if name in first:
            errors.add("%s[%d].name" % (var, index), "%s is used twice (also %s[%d])" % (_shown(name), var, first[name]),
                       "give every %s its own name" % what)
        else:
            first[name] = index


def _check_key(errors, where, key, in_mapping):
    """True for a usable key; otherwise the problem (never the key) goes to errors."""
    if key is None and in_mapping:
        errors.add(where, "missing", "set key to a secret of %d or more characters (%s)" % (MIN_KEY_LENGTH, NEW_KEY))
    elif not isinstance(key, str):
        errors.add(where, "%s, not a string" % _kind(key), "quote the key in YAML")
    elif not key:
        errors.add(where, "an empty key", "set a key of %d or more characters (%s), or remove the entry" % (MIN_KEY_LENGTH, NEW_KEY))
    elif len(key) < MIN_KEY_LENGTH:
        errors.add(where, "the key is shorter than %d characters" % MIN_KEY_LENGTH,
                   "use a longer key (%s)" % NEW_KEY)
    elif not KEY.match(key):
        errors.add(where, "the key holds a space or a character outside printable ASCII",
                   "use printable ASCII characters without spaces (%s; in LLMSERVE_API_KEYS no space after the commas)" % NEW_KEY)
    else:
        return True
    return False


def check_api_keys(keys):
    """(identities, errors) of llmserve_api_keys: identities are {name, key, groups} in the order given."""
    errors = _Errors()
    if keys is None:
        return [], []
    if not isinstance(keys, list):
        errors.add(API, "%s, not a list" % _kind(keys), "write the keys as a list (in Ansible Vault), or export LLMSERVE_API_KEYS=key1,key2")
        return [], list(errors)
    out, names, seen = [], [], {}
    for index, entry in enumerate(keys):
        where = "%s[%d]" % (API, index)
        if isinstance(entry, str):
            key, key_where, name, name_ok, groups = entry, where, None, True, []
        elif isinstance(entry, dict):
            _check_unknown(errors, where, entry, KEY_FIELDS)
            key, key_where, name = entry.get("key"), where + ".key", entry.get("name")
            name_ok = _check_name(errors, where + ".name", name, "key")
            groups = _groups(errors, where + ".groups", entry.get("groups"))
        else:
            errors.add(where, "%s, neither a key nor a mapping" % _kind(entry),
                       "write a key as a quoted string, or as {name: alice, key: ..., groups: [staff]}")
            continue
        key_ok = _check_key(errors, key_where, key, isinstance(entry, dict))
        if key_ok and key in seen:
            # The same key twice: one error (for plain strings, not a second one for the same generated name).
            errors.add(key_where, "the same key as %s[%d] (%s)" % (API, seen[key][0], seen[key][1]),
                       "give every identity its own key (%s)" % NEW_KEY)
            continue
        if name is None and key_ok:
            name = generated_name(key)
        if key_ok:
            seen[key] = (index, name if name_ok else "unnamed")
        if name_ok and name is not None:
            names.append((index, name))
            if key_ok:
                out.append({"name": name, "key": key, "groups": groups})
    _duplicates(errors, names, API, "key")
    return out, list(errors)


def check_basic_users(users):
    """(identities, errors) of llmserve_basic_auth_users: identities are {name, password, groups} in the order given."""
    errors = _Errors()
    if users is None:
        return [], []
    if not isinstance(users, list):
        errors.add(BASIC, "%s, not a list" % _kind(users), "write the users as a list, e.g. [{name: alice, password: ...}] (in Ansible Vault)")
        return [], list(errors)
    out, names = [], []
    low, high = PASSWORD_LENGTH
    for index, entry in enumerate(users):
        where = "%s[%d]" % (BASIC, index)
        if not isinstance(entry, dict):
            errors.add(where, "%s, not a mapping" % _kind(entry), "write each user as {name: alice, password: ..., groups: [staff]}")
            continue
        _check_unknown(errors, where, entry, USER_FIELDS)
        name = entry.get("name")
        if isinstance(name, str) and ":" in name:
            errors.add(where + ".name", "%s holds ':', which ends the user name in HTTP basic auth" % _shown(name),
                       "remove the ':' (use %s)" % NAME_RULE)
            name_ok = False
        else:
            name_ok = _check_name(errors, where + ".name", name, "user")
        groups = _groups(errors, where + ".groups", entry.get("groups"))
        password, password_ok = entry.get("password"), False
        if password is None or password == "":
            errors.add(where + ".password", "missing", "set a password of %d to %d characters (in Ansible Vault)" % (low, high))
        elif not isinstance(password, str):
            errors.add(where + ".password", "%s, not a string" % _kind(password), "quote the password in YAML")
        elif len(password) < low:
            errors.add(where + ".password", "shorter than %d characters" % low, "set a password of %d to %d characters" % (low, high))
        elif len(password.encode("utf-8")) > high:
            errors.add(where + ".password", "longer than %d bytes, bcrypt's limit" % high, "set a password of %d to %d characters" % (low, high))
        else:
            password_ok = True
        if name_ok:
            names.append((index, name))
            if password_ok:
                out.append({"name": name, "password": password, "groups": groups})
    _duplicates(errors, names, BASIC, "user")
    return out, list(errors)


class IdentityError(ValueError):
    """Bad API keys or basic-auth users; messages holds one message a problem (no secret in any)."""

    def __init__(self, messages):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


def _or_raise(result):
    identities, errors = result
    if errors:
        raise IdentityError(errors)
    return identities


def api_identities(keys):
    """[{name, key, groups}] of llmserve_api_keys; IdentityError when any entry is bad."""
    return _or_raise(check_api_keys(keys))


def basic_identities(users):
    """[{name, password, groups}] of llmserve_basic_auth_users; IdentityError when any entry is bad."""
    return _or_raise(check_basic_users(users))


def identity_errors(keys=None, users=None):
    """Every problem of the keys and of the users, as messages that name the field and the fix ([] when all is well)."""
    return check_api_keys(keys)[1] + check_basic_users(users)[1]


def gateway_identities(api=None, basic=None):
    """The gateway's identities.json: {"keys": [{name, groups, sha256}], "users": {user: [groups]}}; hashes only.

    api and basic are llmserve_api_keys and llmserve_basic_auth_users as written (or as normalised above).
    """
    keys = api_identities(api)
    users = basic_identities(basic)
    return {"keys": [{"name": k["name"], "groups": k["groups"], "sha256": key_sha256(k["key"])} for k in keys],
            "users": dict((u["name"], u["groups"]) for u in users)}
