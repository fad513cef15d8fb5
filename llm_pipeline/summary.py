"""Print the headline figures of reports/evaluate.json: `python -m llm_pipeline.summary`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def format_summary(report: dict) -> str:
    metrics = report.get("metrics", {})
    lines = ["", "== llm-pipeline evaluation =="]
    width = max((len(k) for k in metrics), default=0)
    lines += [f"  {key:<{width}}  {value:.4g}" for key, value in sorted(metrics.items())]
    for sample in report.get("generations", []):
        lines.append(f"  > {sample['prompt']!r} -> {sample['continuation']!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    path = Path((argv or sys.argv[1:] or ["reports/evaluate.json"])[0])
    if not path.is_file():
        print(f"{path}: no evaluation report yet", file=sys.stderr)
        return 1
    print(format_summary(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
