# llmserve.k3s — every target bootstraps .venv from nothing (python3 -m venv + pinned requirements).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      := $(CURDIR)/.venv
BIN       := $(VENV)/bin
INVENTORY ?= inventories/workstation
RENDER_DIR ?= build/manifests
COLLECTION_LINK := $(VENV)/collections/ansible_collections/llmserve/k3s
# apt-get for what a target installs from Debian (wrk, the load of benchmarks/gateway.py): sudo unless make runs as root.
SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(VENV)/collections
export PATH := $(BIN):$(PATH)

.PHONY: help bootstrap bootstrap-dev site render plan docs usage test lint sanity unit render-test integration molecule benchmarks build clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: requirements.txt requirements-dev.txt $(BIN)/.runtime
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

bootstrap: $(BIN)/.runtime $(COLLECTION_LINK) ## create .venv with the runtime requirements
bootstrap-dev: bootstrap $(BIN)/.dev ## create .venv with the test tooling too

site: bootstrap ## converge the inventory: hosts, k3s, models, ingress, monitoring
	ansible-playbook -i $(INVENTORY) playbooks/site.yml $(ARGS)

render: bootstrap ## render the Kubernetes bundle of the inventory into build/manifests/
	ansible-playbook -i $(INVENTORY) playbooks/render.yml -e llmserve_render_dir=$(abspath $(RENDER_DIR)) $(ARGS)

plan: bootstrap ## print the plan of the inventory's catalog (GPUs, memory, KV cache, settings) and write build/manifests/plan.json
	ansible-playbook -i $(INVENTORY) playbooks/plan.yml -e llmserve_render_dir=$(abspath $(RENDER_DIR)) $(ARGS)

docs: bootstrap ## regenerate docs/catalog.md's table of catalog fields from the planner's field table
	python tests/lib/catalog_docs.py

usage: bootstrap ## top users and groups by tokens and requests over the last day, from Prometheus (PROMETHEUS_URL)
	python tools/usage.py

test: lint sanity unit render-test integration molecule ## everything CI runs

lint: bootstrap-dev ## yamllint + ansible-lint (production profile)
	yamllint --strict .
	ansible-lint --profile production

sanity: bootstrap-dev ## ansible-test sanity on the collection
	tests/sanity.sh

unit: bootstrap-dev ## unit tests of module_utils, filters and modules
	pytest -q tests/unit

render-test: bootstrap-dev ## render the bundles and validate them (schemas, CRDs, semantics, tags, bad input)
	pytest -q -n auto --dist loadfile tests/render

integration: bootstrap-dev ## real vLLM on CPU, real Prometheus: health module, playbooks, dashboards, alerts
	pytest -q tests/integration

molecule: bootstrap-dev ## converge real systemd-nspawn Debian hosts over SSH, every scenario
	tests/molecule.sh

benchmarks: bootstrap-dev ## print render time, sizing accuracy, converge, serving and gateway figures
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@for b in benchmarks/*.py; do echo "== $$b"; python $$b; done
	@for b in benchmarks/*.sh; do [ -e "$$b" ] || continue; echo "== $$b"; bash $$b; done

build: bootstrap ## build the collection tarball into build/
	ansible-galaxy collection build --force --output-path build .

clean: ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache
