"""Bad-input cases packed into few real runs, now that each check reports every problem at once.

A case is (extra vars, phase, checks): the phase is the task that refuses it (an argument spec, the plan role's
check, a role's preflight check), the checks are the messages it makes. Two cases share a run only when they are
refused by the same task, set no variable in common and make no message in common: then each case's own message is
in the run's output only if that case was refused, whatever the others in the run did. A case alone in its phase
runs alone.
"""

from __future__ import annotations


def pack(cases, prefix="batch"):
    """(runs, run_of): runs {label: extra vars} and run_of {case: label}; cases {case: (extra vars, phase, checks)} or
    (extra vars, phase, checks, appended), checks a string or a tuple of strings, appended the variables whose lists
    or mappings the case's entries join (catalog entries, quota groups, whose messages name the entry, not its place):
    two cases that both append a variable share it (their entries must have names of their own). Deterministic: cases are placed in sorted order, first fit."""
    runs, members, run_of = {}, {}, {}
    for case in sorted(cases):
        extra, phase, checks = cases[case][:3]
        appended = set(cases[case][3]) & set(extra) if len(cases[case]) > 3 else set()
        fixed = set(extra) - appended
        checks = {checks} if isinstance(checks, str) else set(checks)
        for label, (run_phase, run_fixed, run_appended, run_checks) in members.items():
            if (run_phase == phase and not fixed & (run_fixed | run_appended) and not appended & run_fixed
                    and not run_checks & checks):
                break
        else:
            label = "%s-%s-%d" % (prefix, phase, sum(1 for member in members.values() if member[0] == phase))
            members[label] = (phase, set(), set(), set())
            runs[label] = {}
        members[label][1].update(fixed)
        members[label][2].update(appended)
        members[label][3].update(checks)
        for key, value in extra.items():
            if key not in appended:
                runs[label][key] = value
            elif isinstance(value, dict):
                runs[label][key] = dict(runs[label].get(key, {}), **value)
            else:
                runs[label][key] = runs[label].get(key, []) + list(value)
        run_of[case] = label
    return runs, run_of


def flat(output):
    """The output with Ansible's YAML line folding and quote doubling undone: messages are searched in this."""
    return " ".join(output.split()).replace("''", "'")
