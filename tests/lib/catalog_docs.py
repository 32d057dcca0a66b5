"""docs/catalog.md's table of catalog fields, generated from plugins/module_utils/_catalog.py FIELDS.

`make docs` (python tests/lib/catalog_docs.py) rewrites the table; tests/unit/test_catalog_docs.py fails when the
two differ.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "catalog.md"
BEGIN = "<!-- catalog fields: generated from plugins/module_utils/_catalog.py FIELDS by `make docs` -->\n"
END = "<!-- end of catalog fields -->\n"


def split(text):
    """(before, table, after) of the document; ValueError when the markers are missing."""
    head, found, rest = text.partition(BEGIN)
    table, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise ValueError("%s lacks the markers %r ... %r" % (DOC, BEGIN.strip(), END.strip()))
    return head, table, tail


def generated():
    sys.path.insert(0, str(ROOT / ".venv" / "collections"))
    from ansible_collections.llmserve.k3s.plugins.module_utils import _catalog  # pylint: disable=import-outside-toplevel
    return _catalog.fields_markdown()


def main():
    head, dummy, tail = split(DOC.read_text(encoding="utf-8"))
    DOC.write_text(head + BEGIN + generated() + END + tail, encoding="utf-8")


if __name__ == "__main__":
    main()
