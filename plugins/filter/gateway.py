# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmserve.k3s contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the ingress role for the gateway (the front door), its Traefik route; thin wrappers over _gateway."""

from __future__ import annotations

from ansible_collections.llmserve.k3s.plugins.module_utils import _gateway


class FilterModule:
    def filters(self):
        return {"gateway_middlewares": _gateway.middleware_chain, "gateway_route_prefixes": _gateway.route_prefixes,
                "gateway_api_route": _gateway.api_route, "gateway_auth_request_headers": _gateway.auth_request_headers,
                "frontdoor_config_checksum": _gateway.config_checksum, "frontdoor_resources": _gateway.frontdoor_resources,
                "frontdoor_config": _gateway.frontdoor_config, "frontdoor_memory_mib": _gateway.frontdoor_memory_mib}
