"""tests/lib/batches.py: which bad-input cases may share a render run, and what the shared run's variables are.

A wrong packing would make a render test pass on another case's message or lose a case's variable: each rule of
pack() is tried here with the case that it keeps apart."""

from __future__ import annotations

from batches import flat, pack


def test_cases_of_one_phase_with_nothing_in_common_share_a_run_with_both_their_vars():
    runs, run_of = pack({"a": ({"x": 1}, "plan", "x is wrong"), "b": ({"y": 2}, "plan", "y is wrong")})
    assert run_of["a"] == run_of["b"]
    assert runs == {run_of["a"]: {"x": 1, "y": 2}}


def test_a_variable_in_common_keeps_cases_apart():
    runs, run_of = pack({"a": ({"x": 1}, "plan", "x is one"), "b": ({"x": 2}, "plan", "x is two")})
    assert run_of["a"] != run_of["b"]
    assert runs[run_of["a"]] == {"x": 1} and runs[run_of["b"]] == {"x": 2}


def test_another_phase_keeps_cases_apart():
    dummy, run_of = pack({"a": ({"x": 1}, "plan", "x is wrong"), "b": ({"y": 2}, "ingress", "y is wrong")})
    assert run_of["a"] != run_of["b"]
    assert "plan" in run_of["a"] and "ingress" in run_of["b"]


def test_a_message_in_common_keeps_cases_apart_whether_string_or_tuple():
    dummy, run_of = pack({"a": ({"x": 1}, "plan", ("names the fix", "x")), "b": ({"y": 2}, "plan", "names the fix")})
    assert run_of["a"] != run_of["b"]


def test_appended_lists_and_mappings_are_joined_not_overwritten():
    cases = {"a": ({"models": [{"name": "m1"}], "groups": {"g1": 1}}, "plan", "m1", ("models", "groups")),
             "b": ({"models": [{"name": "m2"}], "groups": {"g2": 2}}, "plan", "m2", ("models", "groups"))}
    runs, run_of = pack(cases)
    assert run_of["a"] == run_of["b"]
    assert runs[run_of["a"]] == {"models": [{"name": "m1"}, {"name": "m2"}], "groups": {"g1": 1, "g2": 2}}


def test_a_variable_one_case_appends_and_another_sets_keeps_them_apart():
    cases = {"a": ({"models": [{"name": "m1"}]}, "plan", "m1", ("models",)),
             "b": ({"models": []}, "plan", "no models")}
    runs, run_of = pack(cases)
    assert run_of["a"] != run_of["b"]
    assert runs[run_of["b"]] == {"models": []}


def test_the_first_run_that_fits_is_taken_in_sorted_order_every_time():
    cases = {"c": ({"z": 3}, "plan", "z"), "a": ({"x": 1}, "plan", "x"), "b": ({"x": 2}, "plan", "x2")}
    first = pack(cases)
    assert first == pack(dict(reversed(list(cases.items()))))
    runs, run_of = first
    # a opens run 0, b cannot join it (x), c joins run 0.
    assert run_of["a"] == run_of["c"] == "batch-plan-0" and run_of["b"] == "batch-plan-1"
    assert len(runs) == 2


def test_flat_undoes_yaml_folding_and_quote_doubling():
    output = "msg: 'the value of\n    llmserve_x is ''bad'';\n  set it'"
    assert flat(output) == "msg: 'the value of llmserve_x is 'bad'; set it'"
