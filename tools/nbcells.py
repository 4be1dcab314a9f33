"""Cell builders shared by the notebook sources in tools/nb_*.py."""

from __future__ import annotations

import nbformat as nbf


def md(text: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbf.NotebookNode:
    """A code cell; its input is hidden in the book (a click shows it) unless tagged otherwise."""
    if "show-input" not in tags and "remove-input" not in tags:
        tags = (*tags, "hide-input")
    cell = nbf.v4.new_code_cell(text.strip())
    cell.metadata["tags"] = list(tags)
    return cell
