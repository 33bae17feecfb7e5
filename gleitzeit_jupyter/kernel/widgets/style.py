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

STYLE = """<style>
.gz-panel { border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 6px;
  padding: 6px 10px; }
.gz-panel .widget-label { margin: 0; }
.gz-panel .gz-head { font-weight: bold; color: var(--jp-ui-font-color2, #57606a);
  border-bottom: 1px solid var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-total { font-weight: bold; border-top: 1px solid var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-num { justify-content: flex-end; font-variant-numeric: tabular-nums; }
.gz-panel .gz-dot { font-size: 18px; justify-content: center; }
.gz-panel .gz-err { color: #b3261e; }
.gz-panel .gz-info, .gz-panel .gz-message { color: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-axis { fill: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-plot-bg { fill: var(--jp-layout-color2, #fafbfc);
  stroke: var(--jp-border-color1, #d0d7de); }
.gz-panel .jupyter-button { height: 24px; line-height: 22px; padding: 0 6px; }
</style>"""


def css_class(prefix: str, name: str) -> str:
    """``prefix`` plus ``name`` with every character a CSS class may not hold replaced."""
    return prefix + re.sub(r"[^A-Za-z0-9_-]", "_", name)
