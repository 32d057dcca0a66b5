"""Bad-input cases packed into few real runs, now that each check reports every problem at once.

A case is (extra vars, phase, checks): the phase is the task that refuses it (an argument spec, the plan role's
check, a role's preflight check), the checks are the messages it makes. Two cases share a run only when they are
refused by the same task, set no variable in common and make no message in common: then each case's own message is
in the run's output only if that case was refused, whatever the others in the run did. A case alone in its phase
runs alone.
"""

from __future__ import annotations

import json


def pack(cases, prefix="batch"):
    """(runs, run_of): runs {label: extra vars} and run_of {case: label}; cases {case: (extra vars, phase, checks)},
    checks a string or a tuple of strings. Deterministic: cases are placed in sorted order, first fit."""
    runs, members, run_of = {}, {}, {}
    for case in sorted(cases):
        extra, phase, checks = cases[case]
        checks = {checks} if isinstance(checks, str) else set(checks)
        for label, (run_phase, run_vars, run_checks) in members.items():
            if run_phase == phase and not run_vars & set(extra) and not run_checks & checks:
                break
        else:
            label = "%s-%s-%d" % (prefix, phase, sum(1 for p, _v, _c in members.values() if p == phase))
            members[label] = (phase, set(), set())
            runs[label] = {}
        members[label][1].update(extra)
        members[label][2].update(checks)
        runs[label].update(extra)
        run_of[case] = label
    return runs, run_of


def flat(output):
    """The output with Ansible's YAML line folding and quote doubling undone: messages are searched in this."""
    return " ".join(output.split()).replace("''", "'")


def shown(value):
    """A value as the messages show it (JSON)."""
    return json.dumps(value)
