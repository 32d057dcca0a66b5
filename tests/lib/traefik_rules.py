"""Evaluate Traefik v3 router rules (the IngressRoute `match` syntax) against a request, offline.

Supports the matchers the collection renders or could render by mistake: Host, HostRegexp, Path, PathPrefix,
PathRegexp, Header, HeaderRegexp, Method, combined with &&, ||, ! and parentheses. Unknown matchers are errors,
so a rule the evaluator does not understand fails the test instead of passing it.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:(&&)|(\|\|)|(!)|(\()|(\))|([A-Za-z]+)\(((?:\s*`[^`]*`\s*,?)*)\))")


def _args(text):
    return re.findall(r"`([^`]*)`", text)


def _matcher(name, args, req):
    host, path, headers, method = req["host"], req["path"], req.get("headers", {}), req.get("method", "GET")
    lower = {k.lower(): v for k, v in headers.items()}
    if name == "Host":
        return host.lower() in [a.lower() for a in args]
    if name == "HostRegexp":
        return re.search(args[0], host) is not None
    if name == "Path":
        return path in args
    if name == "PathPrefix":
        return any(path.startswith(a) for a in args)
    if name == "PathRegexp":
        return re.search(args[0], path) is not None
    if name == "Header":
        return lower.get(args[0].lower()) == args[1]
    if name == "HeaderRegexp":
        value = lower.get(args[0].lower())
        return value is not None and re.search(args[1], value) is not None
    if name == "Method":
        return method in args
    raise ValueError("matcher %s is not known to the evaluator" % name)


def _tokens(rule):
    pos, out = 0, []
    while pos < len(rule):
        if rule[pos:].strip() == "":
            break
        m = _TOKEN.match(rule, pos)
        if not m:
            raise ValueError("cannot parse rule at %r" % rule[pos:])
        if m.group(6):
            out.append(("M", m.group(6), _args(m.group(7))))
        else:
            out.append(("OP", next(g for g in m.groups()[:5] if g)))
        pos = m.end()
    return out


def matches(rule, request):
    """True when the rule matches request = {host, path, headers?, method?}."""
    toks = _tokens(rule)
    idx = 0

    def expr():  # or-expression
        nonlocal idx
        value = term()
        while idx < len(toks) and toks[idx] == ("OP", "||"):
            idx += 1
            value = term() or value
        return value

    def term():  # and-expression
        nonlocal idx
        value = factor()
        while idx < len(toks) and toks[idx] == ("OP", "&&"):
            idx += 1
            value = factor() and value
        return value

    def factor():
        nonlocal idx
        tok = toks[idx]
        idx += 1
        if tok == ("OP", "!"):
            return not factor()
        if tok == ("OP", "("):
            value = expr()
            assert toks[idx] == ("OP", ")"), "unbalanced parentheses in %r" % rule
            idx += 1
            return value
        assert tok[0] == "M", "unexpected %r in %r" % (tok, rule)
        return _matcher(tok[1], tok[2], request)

    result = expr()
    assert idx == len(toks), "trailing tokens in %r" % rule
    return result


def strip_prefixes(path, prefixes):
    """The path a StripPrefix middleware forwards (Traefik strips the first matching prefix)."""
    for prefix in prefixes:
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return rest if rest.startswith("/") else "/" + rest
    return path
