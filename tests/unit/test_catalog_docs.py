"""The catalog fields are described once (_catalog.FIELDS); docs/catalog.md's table is generated from it."""

from __future__ import annotations

import re

import catalog_docs
from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog


def test_docs_table_is_the_generated_one():
    dummy, table, dummy2 = catalog_docs.split(catalog_docs.DOC.read_text(encoding="utf-8"))
    assert table == catalog_docs.generated(), "docs/catalog.md is out of date: run `make docs`"


def test_table_has_every_field_the_planner_accepts_and_its_allowed_values():
    table = _catalog.fields_markdown()
    assert re.findall(r"^\| `([a-z_]+)` \|", table, re.M) == list(_catalog.FIELDS)
    for value in list(_catalog.DTYPES) + list(_catalog.QUANTIZATIONS) + list(_catalog.KV_CACHE_DTYPES):
        assert "`%s`" % value in table


def test_readmes_point_to_the_one_description():
    root = catalog_docs.ROOT
    for readme in (root / "README.md", root / "roles" / "vllm_models" / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert "docs/catalog.md" in text, readme
        # No second hand-kept list of the fields.
        assert "`max_num_batched_tokens`" not in text, readme
