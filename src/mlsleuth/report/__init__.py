"""Renderers of result objects: JSON, Markdown and HTML."""

from mlsleuth.report._render import render, to_html, to_json, to_markdown

__all__ = ["render", "to_html", "to_json", "to_markdown"]
