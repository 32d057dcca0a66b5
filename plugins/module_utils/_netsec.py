# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of ingress inputs (IP ranges, host names) and Traefik rule helpers. Pure logic, stdlib only."""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def bad_ip_ranges(ranges):
    """The entries of ranges that are neither an IP address nor a CIDR network (host bits set is an error too)."""
    bad = []
    for entry in ranges or []:
        try:
            ipaddress.ip_network(str(entry), strict=True)
        except ValueError:
            bad.append(entry)
    return bad


def is_dns_name(name):
    """True for a lower-case DNS name of labels (RFC 1123), at most 253 characters, not an IP address."""
    if not isinstance(name, str) or not name or len(name) > 253:
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        pass
    return all(_LABEL.match(label) for label in name.split("."))


def path_prefix(name):
    """The ingress path prefix of a catalog model: /models/<name>."""
    return "/models/" + name


def egress_ip_blocks(cidrs, excepted=None):
    """The ipBlocks of an egress rule to cidrs: each with the ranges of excepted of its own family (Kubernetes refuses
    an IPv6 exception inside an IPv4 block, and the other way round); no `except` key where none applies."""
    blocks = []
    for cidr in cidrs or []:
        ipv6 = ":" in cidr
        inside = [r for r in excepted or [] if (":" in r) == ipv6]
        blocks.append(dict({"cidr": cidr}, **({"except": inside} if inside else {})))
    return blocks
