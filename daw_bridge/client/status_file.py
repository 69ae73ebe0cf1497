"""A status file a Lua script can parse with one pattern: ``key=value`` per line.

Rewritten atomically (temporary name, then rename), so a reader never sees half
a file. Values never contain newlines; stem paths come as ``stem.<name>=<path>``;
a job with an effect preset adds ``preset=<name>`` and its processed stems as
``processed.<name>=<path>`` (the raw ``stem.`` lines stay).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daw_bridge.files import atomic_output


def render(event: dict[str, Any]) -> str:
    lines = [
        f"job={event.get('job', '')}",
        f"state={event.get('state', '')}",
        f"progress={float(event.get('progress') or 0.0):.4f}",
    ]
    error = event.get("error") or {}
    if error:
        lines.append(f"error={_one_line(error.get('problem', ''))}")
        lines.append(f"fix={_one_line(error.get('fix', ''))}")
    result = event.get("result") or {}
    if result:
        lines.append(f"folder={result['folder']}")
        lines.append(f"cached={str(result.get('cached', False)).lower()}")
        lines.extend(f"stem.{name}={path}" for name, path in result["stems"].items())
        if result.get("preset"):
            lines.append(f"preset={result['preset']}")
            processed = result.get("processed") or {}
            lines.extend(f"processed.{name}={path}" for name, path in processed.items())
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_status(path: Path, event: dict[str, Any]) -> None:
    with atomic_output(Path(path), overwrite=True) as temporary:
        temporary.write_text(render(event), encoding="utf-8")
