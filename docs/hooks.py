"""MkDocs hook: reference tables generated from the code itself, so they never drift from it.

A page that holds the line ``<!-- cli-reference -->`` gets, in its place, one section per ``mlsleuth`` command
with its arguments, options, defaults and environment variables, read from typer's click command. The line
``<!-- thresholds-table -->`` becomes the diagnosis's thresholds table (name, default, unit, why), read from
:class:`mlsleuth.diagnosis.Thresholds`.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"
THRESHOLDS_MARKER = "<!-- thresholds-table -->"


def _cell(text: object) -> str:
    return str(text).replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")


def _param_rows(command: Any) -> list[str]:
    rows = ["| argument or option | default | environment | meaning |", "|---|---|---|---|"]
    for p in command.params:
        if p.param_type_name == "argument":
            name = f"`{p.name.upper()}`" + ("" if p.required else " (optional)")
        else:
            name = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        default = p.default
        shown = "" if default is None or default == () or (isinstance(default, bool) and not default) else (
            f"`{default}`" if not callable(default) else "")
        env = f"`{p.envvar}`" if getattr(p, "envvar", None) else ""
        rows.append(f"| {name} | {_cell(shown)} | {env} | {_cell(getattr(p, 'help', '') or '')} |")
    return rows


def cli_reference() -> str:
    """Markdown for every command of ``mlsleuth``, in the order ``mlsleuth --help`` lists them."""
    import typer

    from mlsleuth.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="mlsleuth")
    lines: list[str] = []
    for name in group.list_commands(ctx):  # type: ignore[attr-defined]
        command = group.get_command(ctx, name)  # type: ignore[attr-defined]
        help_text = (command.help or "").strip().split("\n\n")
        lines += [f"### `mlsleuth {name}`", "", help_text[0].replace("\n", " "), ""]
        lines += _param_rows(command)
        lines.append("")
    return "\n".join(lines)


def thresholds_table() -> str:
    """Markdown table of every diagnosis threshold: name, default, unit and why."""
    from mlsleuth.diagnosis import Thresholds

    rows = ["| threshold | default | unit | why |", "|---|---|---|---|"]
    rows += [f"| `{t.name}` | {t.value:g} | {_cell(t.unit)} | {_cell(t.why)} |" for t in Thresholds.table()]
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the markers with the generated references."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    if THRESHOLDS_MARKER in markdown:
        markdown = markdown.replace(THRESHOLDS_MARKER, thresholds_table())
    return markdown
