"""module_utils/_identity: API keys and basic-auth users -> named identities and the gateway's identities document.

The error table also proves that no message holds a key or a password, whatever the mistake.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmserve.k3s.plugins.filter import security
from ansible_collections.llmserve.k3s.plugins.module_utils import _identity

ALICE = "sk-alice-0123456789abcdef"
BOB = "sk-bob-fedcba9876543210"
PLAIN = "sk-plain-key-0000000000"
PASSWORD = "correct-horse-battery"
SECRETS = (ALICE, BOB, PLAIN, PASSWORD, "shortkey", "shortpw", "sk-with space-0123456789")


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_plain_string_gets_a_name_from_its_hash():
    (identity,) = _identity.api_identities([PLAIN])
    assert identity == {"name": "key-" + sha(PLAIN)[:8], "key": PLAIN, "groups": []}


def test_named_keys_keep_name_and_groups_in_order():
    keys = [{"name": "alice", "key": ALICE, "groups": ["staff", "physics", "staff"]}, {"name": "bob@uni.example", "key": BOB},
            PLAIN]
    assert _identity.api_identities(keys) == [
        {"name": "alice", "key": ALICE, "groups": ["staff", "physics"]},
        {"name": "bob@uni.example", "key": BOB, "groups": []},
        {"name": "key-" + sha(PLAIN)[:8], "key": PLAIN, "groups": []}]
    # Normalised identities are valid input again (the filters may be chained).
    assert _identity.api_identities(_identity.api_identities(keys)) == _identity.api_identities(keys)


def test_basic_users_with_and_without_groups():
    users = [{"name": "alice", "password": PASSWORD, "groups": ["staff"]}, {"name": "bob", "password": PASSWORD}]
    assert _identity.basic_identities(users) == [{"name": "alice", "password": PASSWORD, "groups": ["staff"]},
                                                 {"name": "bob", "password": PASSWORD, "groups": []}]


def test_nothing_given_is_no_identity():
    assert _identity.api_identities(None) == [] and _identity.api_identities([]) == []
    assert _identity.gateway_identities(None, None) == {"keys": [], "users": {}}
    assert _identity.identity_errors() == []


def test_gateway_document_holds_hashes_only():
    keys = [{"name": "alice", "key": ALICE, "groups": ["staff"]}, PLAIN]
    users = [{"name": "carol", "password": PASSWORD, "groups": ["physics"]}]
    document = _identity.gateway_identities(keys, users)
    hashed = [{"name": "alice", "groups": ["staff"], "sha256": sha(ALICE)},
              {"name": "key-" + sha(PLAIN)[:8], "groups": [], "sha256": sha(PLAIN)}]
    assert document == {"keys": hashed, "users": {"carol": ["physics"]}}
    text = json.dumps(document)
    for secret in (ALICE, PLAIN, PASSWORD):
        assert secret not in text
    # The filter the ingress role applies gives the same document.
    assert security.gateway_identities(keys, users) == document


def key(name, value=ALICE, **more):
    return dict({"name": name, "key": value}, **more)


def user(name, password=PASSWORD, **more):
    return dict({"name": name, "password": password}, **more)


# (keys, users) -> the exact message expected among the errors
ERRORS = [
    ([key("alice"), key("bob", BOB), key("alice", PLAIN)], None,
     "llmserve_api_keys[2].name: 'alice' is used twice (also llmserve_api_keys[0]). Fix: give every key its own name."),
    ([key("alice", "")], None,
     "llmserve_api_keys[0].key: an empty key. Fix: set a key of 16 or more characters (generate one with: openssl rand -hex 32), "
     "or remove the entry."),
    ([PLAIN, ""], None, "llmserve_api_keys[1]: an empty key."),
    ([{"name": "alice"}], None, "llmserve_api_keys[0].key: missing. Fix: set key to a secret of 16 or more characters"),
    ([key("alice"), key("bob")], None,
     "llmserve_api_keys[1].key: the same key as llmserve_api_keys[0] (alice). Fix: give every identity its own key"),
    ([PLAIN, PLAIN], None, "llmserve_api_keys[1]: the same key as llmserve_api_keys[0] (key-%s)." % sha(PLAIN)[:8]),
    ([key("alice", "shortkey")], None, "llmserve_api_keys[0].key: the key is shorter than 16 characters. Fix: use a longer key"),
    (["sk-with space-0123456789"], None, "llmserve_api_keys[0]: the key holds a space or a character outside printable ASCII."),
    ([key("alice", 12345678901234567890)], None, "llmserve_api_keys[0].key: a number, not a string. Fix: quote the key in YAML."),
    ([key("al ice")], None,
     "llmserve_api_keys[0].name: 'al ice' is not a name. Fix: use 1 to 63 letters, digits, '.', '_', '@' or '-', "
     "starting with a letter or digit."),
    ([key("-alice")], None, "llmserve_api_keys[0].name: '-alice' is not a name."),
    ([key("a" * 64)], None, "llmserve_api_keys[0].name: 'aaaaaaaaaaa"),
    ([key(None)], None, "llmserve_api_keys[0].name: missing. Fix: give every key a name"),
    ([key(7)], None, "llmserve_api_keys[0].name: a number, not a name."),
    ([key("alice", groups="staff")], None,
     "llmserve_api_keys[0].groups: a string, not a list. Fix: write groups as a list of names, e.g. groups: [staff, physics]."),
    ([key("alice", groups=["staff", "two words"])], None, "llmserve_api_keys[0].groups[1]: 'two words' is not a group name."),
    ([key("alice", groups=[{"name": "staff"}])], None, "llmserve_api_keys[0].groups[0]: a mapping is not a group name."),
    ([key("alice", group=["staff"])], None,
     "llmserve_api_keys[0].group: unknown field. Fix: did you mean groups? use only the fields name, key, groups."),
    ([dict(key("alice"), api_key=BOB)], None, "llmserve_api_keys[0].api_key: unknown field. Fix: did you mean key?"),
    # A mapping from a key to a name: the unknown field is the key itself and must not be printed.
    ([{ALICE: "alice"}], None, "llmserve_api_keys[0]: a field that is not name, key, groups (its name is not shown"),
    ([["alice", ALICE]], None, "llmserve_api_keys[0]: a list, neither a key nor a mapping."),
    ("%s,%s" % (ALICE, BOB), None, "llmserve_api_keys: a string, not a list."),
    (None, [user("a:b")], "llmserve_basic_auth_users[0].name: 'a:b' holds ':', which ends the user name in HTTP basic auth."),
    (None, [{"name": "alice"}], "llmserve_basic_auth_users[0].password: missing. Fix: set a password of 8 to 72 characters"),
    (None, [user("alice", "")], "llmserve_basic_auth_users[0].password: missing."),
    (None, [user("alice", "shortpw")], "llmserve_basic_auth_users[0].password: shorter than 8 characters."),
    (None, [user("alice", "x" * 73)], "llmserve_basic_auth_users[0].password: longer than 72 bytes, bcrypt's limit."),
    (None, [user("alice"), user("alice")],
     "llmserve_basic_auth_users[1].name: 'alice' is used twice (also llmserve_basic_auth_users[0]). Fix: give every user its own name."),
    (None, [user("alice", groups=["a", "b c"])], "llmserve_basic_auth_users[0].groups[1]: 'b c' is not a group name."),
    (None, [user("alice", email="a@b.c")], "llmserve_basic_auth_users[0].email: unknown field."),
    (None, [user("alice", passwd=PASSWORD)], "llmserve_basic_auth_users[0].passwd: unknown field. Fix: did you mean password?"),
    (None, ["alice:" + PASSWORD], "llmserve_basic_auth_users[0]: a string, not a mapping."),
    (None, {"alice": PASSWORD}, "llmserve_basic_auth_users: a mapping, not a list."),
]


@pytest.mark.parametrize("keys, users, message", ERRORS, ids=[case[2][:70] for case in ERRORS])
def test_error_messages_name_the_field_and_the_fix_and_no_secret(keys, users, message):
    errors = _identity.identity_errors(keys, users)
    assert any(message in e for e in errors), errors
    assert all(". Fix: " in e for e in errors), errors
    for secret in SECRETS:
        assert not any(secret in e for e in errors), (secret, errors)
    # The functions that build identities refuse the same input, with the same messages.
    with pytest.raises(_identity.IdentityError) as raised:
        _identity.gateway_identities(keys, users)
    assert raised.value.messages == errors
    with pytest.raises(AnsibleFilterError):
        security.gateway_identities(keys, users)


def test_every_problem_is_reported_at_once():
    errors = _identity.identity_errors([key("alice"), key("alice", ""), key("b c", BOB, groups="x")], [user("a:b", "shortpw")])
    assert [e.split(":")[0] for e in errors] == [
        "llmserve_api_keys[1].key", "llmserve_api_keys[2].name", "llmserve_api_keys[2].groups", "llmserve_api_keys[1].name",
        "llmserve_basic_auth_users[0].name", "llmserve_basic_auth_users[0].password"]


def test_valid_edge_values():
    keys = [key("a"), key("A1._@-" + "x" * 57, BOB), "!" * 16]
    assert [k["name"] for k in _identity.api_identities(keys)][:2] == ["a", "A1._@-" + "x" * 57]
    assert _identity.basic_identities([user("alice@uni.example", "p" * 8), user("bob", "p" * 72)])
