"""Print the headline figures of reports/evaluate.json: `python -m llm_pipeline.summary`.

With the evaluate stage's `scores`, these are the score tables of reports/summary.md (every
model beside its task's baselines, with a verdict); an older report without them prints its
flat metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llm_pipeline.errors import PipelineError


def format_summary(report: dict, source: str = "reports/evaluate.json") -> str:
    lines = ["", "== llm-pipeline evaluation =="]
    if "scores" in report:
        from llm_pipeline.evaluation.report import parse_evaluation, render_tables

        lines += ["", render_tables(parse_evaluation(report, source)).rstrip()]
    else:
        metrics = report.get("metrics", {})
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
    try:
        print(format_summary(json.loads(path.read_text()), str(path)))
    except json.JSONDecodeError as exc:
        print(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}", file=sys.stderr)
        return 1
    except PipelineError as exc:  # names the file itself
        print(exc, file=sys.stderr)
        return 1
    summary = path.with_name("summary.md")
    if summary.is_file():
        print(f"\nFull report: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
