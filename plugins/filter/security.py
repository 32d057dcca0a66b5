# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the ingress, llm_namespace and gpu_device_plugin roles: identities, egress blocks, htpasswd content for Traefik's BasicAuth,
allocatable GPUs."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.module_utils import _identity, _netsec

try:
    import bcrypt
    HAS_BCRYPT = True
except ImportError:  # pragma: no cover - reported when the filter is used
    HAS_BCRYPT = False

BCRYPT_ROUNDS = 10


def _existing_hashes(existing):
    out = {}
    for line in (existing or "").splitlines():
        if ":" in line:
            user, hashed = line.split(":", 1)
            out[user.strip()] = hashed.strip()
    return out


def htpasswd(users, existing=""):
    """htpasswd lines (bcrypt) for [{name, password}]; a hash in existing that still verifies is kept (idempotent)."""
    if not HAS_BCRYPT:
        raise AnsibleFilterError("htpasswd needs the Python package bcrypt on the controller (pip install bcrypt)")
    old = _existing_hashes(existing)
    lines = []
    for user in users or []:
        if not isinstance(user, dict) or not user.get("name") or not user.get("password"):
            raise AnsibleFilterError("htpasswd: every user needs a name and a password")
        name, password = str(user["name"]), str(user["password"]).encode("utf-8")
        if ":" in name:
            raise AnsibleFilterError("htpasswd: user name %r contains ':'" % name)
        if len(password) > 72:
            raise AnsibleFilterError("htpasswd: the password of %r is longer than bcrypt's 72 bytes" % name)
        kept = old.get(name, "")
        if kept.startswith(("$2a$", "$2b$", "$2y$")) and bcrypt.checkpw(password, kept.encode("ascii")):
            lines.append("%s:%s" % (name, kept))
        else:
            lines.append("%s:%s" % (name, bcrypt.hashpw(password, bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")))
    return "\n".join(lines) + "\n" if lines else ""


def _identities(function, *args):
    try:
        return function(*args)
    except _identity.IdentityError as exc:  # the messages hold no key or password
        raise AnsibleFilterError("; ".join(exc.messages)) from None


def api_identities(keys):
    """[{name, key, groups}] of llmserve_api_keys (plain strings get the name key-<8 hex of their sha256>)."""
    return _identities(_identity.api_identities, keys)


def basic_identities(users):
    """[{name, password, groups}] of llmserve_basic_auth_users."""
    return _identities(_identity.basic_identities, users)


def gateway_identities(keys, users=None):
    """The gateway's identities.json document (key hashes, users' groups); never a key in clear."""
    return _identities(_identity.gateway_identities, keys, users)


def allocatable(nodes, resource):
    """{node name: allocatable count of resource} of Node objects (0 where the node advertises none)."""
    out = {}
    for node in nodes or []:
        value = ((node.get("status") or {}).get("allocatable") or {}).get(resource, "0")
        try:
            out[(node.get("metadata") or {}).get("name", "")] = int(str(value))
        except ValueError:
            out[(node.get("metadata") or {}).get("name", "")] = 0
    return out


class FilterModule:
    def filters(self):
        return {"htpasswd": htpasswd, "egress_ip_blocks": _netsec.egress_ip_blocks, "allocatable": allocatable,
                "api_identities": api_identities,
                "basic_identities": basic_identities, "gateway_identities": gateway_identities}
