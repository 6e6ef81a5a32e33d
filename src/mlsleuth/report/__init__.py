"""Renderers of result objects: JSON, Markdown and HTML (incident reports with charts and a post-mortem)."""

from mlsleuth.report._monitors import monitor_html, monitor_json, monitor_table
from mlsleuth.report._postmortem import TO_FILL, ActionItem, PostMortem, TimelineEntry, postmortem
from mlsleuth.report._render import SECTIONS, render, to_html, to_json, to_markdown
from mlsleuth.report._replay import replay_to_html, replay_to_json, replay_to_markdown

__all__ = [
    "SECTIONS",
    "TO_FILL",
    "ActionItem",
    "PostMortem",
    "TimelineEntry",
    "monitor_html",
    "monitor_json",
    "monitor_table",
    "postmortem",
    "render",
    "replay_to_html",
    "replay_to_json",
    "replay_to_markdown",
    "to_html",
    "to_json",
    "to_markdown",
]
