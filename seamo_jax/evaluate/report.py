"""probe_results.json + probe_results.md: the probe's numbers, machine- and human-readable.

The JSON holds every per-seed number and the summaries (mean, std, 95%
t-interval), written with sorted keys and no timestamps, so two runs of the
same command produce byte-identical files. The Markdown table has one row per
(input, encoder) and one column per (metric, label fraction), each cell
"mean ± CI half-width".
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from etils import epath

from seamo_jax.paths import PathLike, user_path

JSON_FILE = "probe_results.json"
MARKDOWN_FILE = "probe_results.md"


def _cell(summary: Mapping[str, Any]) -> str:
    mean = 100.0 * summary["mean"]
    per_seed = {s["value"] for s in summary.get("per_seed", ())}
    if summary.get("n", 0) > 1 and len(per_seed) == 1:
        # e.g. kNN on all labels: the seeds change nothing it reads. "± 0.00" would read as a measured spread.
        return f"{mean:.2f} (deterministic: no seed spread)"
    if summary.get("ci_half_width") is None:
        return f"{mean:.2f} (n={summary['n']})"
    return f"{mean:.2f} ± {100.0 * summary['ci_half_width']:.2f}"


def markdown_table(results: Mapping[str, Any]) -> str:
    """Renders results["results"] (rows with input, encoder, metric, label_fraction, mean, ...) as Markdown."""
    rows = results["results"]
    columns = list(dict.fromkeys((r["metric"], r["label_fraction"]) for r in rows))
    keys = list(dict.fromkeys((r["input"], r["encoder"]) for r in rows))
    lookup = {(r["input"], r["encoder"], r["metric"], r["label_fraction"]): r for r in rows}
    header = ["input", "encoder"] + [f"{metric} @{100 * fraction:g}%" for metric, fraction in columns]
    lines = [f"# Probe results ({results.get('data', {}).get('builder', '')})", ""]
    meta = results.get("checkpoint") or "none (random init and band statistics only)"
    lines += [f"- checkpoint: `{meta}` (step {results.get('step')})",
              f"- task: {results.get('task')}, classes: {results.get('num_classes')}, "
              f"train / test samples: {results.get('data', {}).get('num_train')} / "
              f"{results.get('data', {}).get('num_test')}",
              f"- seeds: {results.get('seeds')}; cells are mean ± 95% t-interval half-width over seeds, in %",
              ""]
    for name, protocol in results.get("protocols", {}).items():
        sizes = sorted({r["input_size"] for r in rows if r.get("protocol") == name and "input_size" in r})
        variants = sorted({r["metric_variant"] for r in rows if r.get("protocol") == name and "metric_variant" in r})
        lines.append(f"- protocol `{name}`: {protocol['description']}; metrics {', '.join(variants)}; "
                     f"input size {', '.join(map(str, sizes))} px; normalisation: {protocol['normalisation_used']}")
    for skip in results.get("skipped", ()):
        lines.append(f"- not run: {skip['protocol']} on {skip['input']} / {skip['encoder']} at "
                     f"{100 * skip['label_fraction']:g}% labels, seed {skip['seed']}: {skip['reason']}")
    if results.get("protocols") or results.get("skipped"):
        lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for input_name, encoder in keys:
        cells = [input_name, encoder]
        for metric, fraction in columns:
            row = lookup.get((input_name, encoder, metric, fraction))
            cells.append(_cell(row) if row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: PathLike, results: Mapping[str, Any]) -> tuple[epath.Path, epath.Path]:
    """Writes both files into `out_dir`; returns their paths."""
    out_dir = user_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    md_path.write_text(markdown_table(results))
    return json_path, md_path
