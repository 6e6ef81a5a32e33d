"""Renderers of result objects: JSON, Markdown and HTML."""

from mlsleuth.report._monitors import monitor_json, monitor_table
from mlsleuth.report._render import render, to_html, to_json, to_markdown
from mlsleuth.report._replay import replay_to_html, replay_to_json, replay_to_markdown

__all__ = [
    "monitor_json",
    "monitor_table",
    "render",
    "replay_to_html",
    "replay_to_json",
    "replay_to_markdown",
    "to_html",
    "to_json",
    "to_markdown",
]
