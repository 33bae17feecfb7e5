"""How the panels look: colours, the panel's CSS and CSS class names."""

from __future__ import annotations

import re

#: Health dot colour by instance status (``status`` of a row: ``drained`` when disabled).
HEALTH_COLORS = {
    "healthy": "#2e9e44",
    "degraded": "#e0a100",
    "unhealthy": "#d62728",
    "starting": "#4a90d9",
    "draining": "#9e9e9e",
    "drained": "#9e9e9e",
    "stopped": "#555555",
}
BREAKER_COLORS = {"closed": "#2e9e44", "half_open": "#e0a100", "open": "#d62728"}
#: Line colours of the latency plot, one per instance (cycled).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")

#: (narrower than, columns dropped there): the panel sheds its low-priority columns as it
#: gets narrow (the sidebar opened, a split view) instead of scrolling its buttons away.
BREAKPOINTS = ((1000, 2), (840, 4), (700, 6), (560, 7), (440, 9))

_BASE_CSS = """
.gz-panel { border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 6px;
  padding: 6px 10px; container-type: inline-size; box-sizing: border-box;
  color: var(--jp-ui-font-color1, #1f2328); }
.gz-panel .widget-label { margin: 0; color: inherit; }
.gz-panel .gz-header { flex-wrap: wrap; row-gap: 4px; }
.gz-panel .gz-head { font-weight: bold; color: var(--jp-ui-font-color2, #57606a);
  border-bottom: 1px solid var(--jp-border-color1, #d0d7de); overflow: visible;
  white-space: normal; line-height: 1.2; height: auto; align-self: stretch;
  align-items: flex-end; }
.gz-panel .gz-total { font-weight: bold; border-top: 1px solid var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-num { justify-content: flex-end; font-variant-numeric: tabular-nums; }
.gz-panel .gz-dot { font-size: 18px; justify-content: center; }
.gz-panel .gz-cell-instance { overflow: visible; white-space: normal;
  overflow-wrap: anywhere; line-height: 1.25; height: auto; }
.gz-panel .gz-cell-instance .widget-html-content, .gz-panel .gz-err .widget-html-content {
  line-height: 1.25; }
.gz-panel .gz-err { color: var(--jp-error-color1, #b3261e); white-space: normal;
  overflow-wrap: anywhere; line-height: 1.25; height: auto; }
.gz-panel .gz-err.gz-err-old { color: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-info, .gz-panel .gz-message { color: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-axis { fill: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-plot-bg { fill: var(--jp-layout-color2, #fafbfc);
  stroke: var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-plot { max-width: 100%; height: auto; }
.gz-panel .gz-gridline { stroke: var(--jp-border-color2, #e5e7eb); }
.gz-panel .gz-legend { color: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-cell-actions { gap: 4px; }
.gz-panel .jupyter-button { height: 24px; line-height: 22px; padding: 0 6px; margin: 0; }
"""


def grid_css(columns: tuple[tuple[str, str, str], ...], optional: tuple[str, ...]) -> str:
    """The grid's column template at full width and at each breakpoint, where the first
    ``optional`` columns are hidden (header and cells) and left out of the template."""

    def template(dropped: tuple[str, ...]) -> str:
        return " ".join(width for key, _, width in columns if key not in dropped)

    rules = [f".gz-panel .gz-grid {{ grid-template-columns: {template(())} !important; }}"]
    for below, count in BREAKPOINTS:
        dropped = optional[:count]
        hide = ", ".join(f".gz-panel .gz-cell-{c}, .gz-panel .gz-head-{c}" for c in dropped)
        rules.append(
            f"@container (max-width: {below - 1}px) {{"
            f" .gz-panel .gz-grid {{ grid-template-columns: {template(dropped)} !important; }}"
            f" {hide} {{ display: none !important; }} }}"
        )
    return "\n".join(rules)


def panel_style(columns: tuple[tuple[str, str, str], ...], optional: tuple[str, ...]) -> str:
    """The ``<style>`` element a panel carries (JupyterLab's CSS variables, so the dark
    theme reads as well as the light one)."""
    return f"<style>{_BASE_CSS}{grid_css(columns, optional)}</style>"


def css_class(prefix: str, name: str) -> str:
    """``prefix`` plus ``name`` with every character a CSS class may not hold replaced."""
    return prefix + re.sub(r"[^A-Za-z0-9_-]", "_", name)
