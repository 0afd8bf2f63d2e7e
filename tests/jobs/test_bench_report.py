"""``lode bench``: the Markdown report (figures, same-run peer, ratio, machine) and the README rewrite."""

from __future__ import annotations

import json

import pytest

from jobs.bench import BEGIN, END, HEADLINES, QUICK, _names, markdown, rewrite_readme
from jobs.cli import main as lode

META = {
    "machine": "test CPU, 2 logical CPUs",
    "failed": ["xpl"],
    "runs": {
        "segment_throughput": {"mode": "quick", "seconds": 3.2, "date": "2026-12-01 10:00 UTC"},
        "prospect": {"mode": "full", "seconds": 61.0, "date": "2026-12-02 11:00 UTC"},
        "not_in_results": {"mode": "full", "seconds": 9.0, "date": "2026-12-03 12:00 UTC"},
    },
}


def table(report: str) -> dict[tuple[str, str, str], list[str]]:
    out = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("benchmark", "---"):
            out[(cells[0], cells[1], cells[3])] = cells
    return out


def test_rows_give_each_figure_its_peer_and_ratio():
    results = {
        "segment_throughput": {
            "engine_mpx_s": 0.6,
            "bare_model_mpx_s": 1.2,
            "monai_mpx_s": 0.8,
            "max_abs_prob_diff_vs_monai": 5e-7,
        },
        "prospect": {
            "best_baseline": "iforest",
            "model": "mae",
            "table": {
                "mae": {"auc_mean": 0.9, "capture_top10_pooled": 0.5},
                "iforest": {"auc_mean": 0.95, "capture_top10_pooled": 0.6},
            },
        },
        "lineaments": {"summary": {"mean_classical_2": {"f1": 0.7}}},
        "sampler_ablation": {
            "rarest_class": 3,
            "rarest_name": "magnetite",
            "balanced": {"iou": {"3": 0.6, "5": 0.1}},
            "uniform": {"iou": {"3": 0.2, "5": 0.9}},
        },
        "newcomer": {"speed": {"items_s": 12.5}},
    }
    rows = table(markdown(results, META))
    assert rows[("segment_throughput", "engine, whole job (Mpx/s)", "bare model")][4:] == ["1.2", "0.5"]
    assert rows[("segment_throughput", "engine, whole job (Mpx/s)", "MONAI sliding_window_inference")][5] == "0.75"
    assert rows[("segment_throughput", "max abs prob difference vs MONAI", "")][2] == "5e-07"
    mae = rows[("prospect", "AUC on held-out deposits, ViT MAE", "best baseline (iforest)")]
    assert mae[2:] == ["0.9", "best baseline (iforest)", "0.95", f"{0.9 / 0.95:.4g}"]
    assert ("lineaments", "F1 at 2 cells, U-Net", "") not in rows
    assert rows[("lineaments", "F1 at 2 cells, classical", "")][5] == "—"
    assert rows[("newcomer", "speed.items_s", "")][2] == "12.5"
    rare = rows[("sampler_ablation", "IoU of the rarest class (magnetite), balanced", "uniform")]
    assert rare[2:] == ["0.6", "uniform", "0.2", "3"]
    head = markdown(results, META).splitlines()[:3]
    assert head[0] == "Machine: test CPU, 2 logical CPUs  "
    assert head[1] == (
        "Mode: full, quick; wall per benchmark: segment_throughput 3 s (2026-12-01 10:00 UTC), "
        "prospect 61 s (2026-12-02 11:00 UTC)  "
    )
    assert head[2] == "Failed: xpl  "
    assert markdown(results, {"machine": "m"}).splitlines()[1] == "Mode: unknown; wall per benchmark:   "


def test_readme_rewrite_replaces_only_the_marked_part(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    rewrite_readme(readme, "| a | b |\n")
    rewrite_readme(readme, "| new | table |\n")
    assert readme.read_text() == f"# Title\n\nbefore\n\n{BEGIN}\n| new | table |\n{END}\n\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        rewrite_readme(plain, "x")
    assert plain.read_text() == "no markers\n"


def test_lode_bench_runs_a_benchmark_and_regenerates_the_readme_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nstale\n{END}\n")
    out = tmp_path / "bench"
    assert (
        lode(
            [
                "bench",
                "--only",
                "lineaments",
                "--out",
                str(out),
                "--args",
                "lineaments=--n 1 --size 128",
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    result = json.loads((out / "lineaments.json").read_text())
    f1 = result["summary"]["mean_classical_2"]["f1"]
    text = readme.read_text()
    assert "stale" not in text and f"| lineaments | F1 at 2 cells, classical | {f1:.4g} |" in text
    assert "logical CPUs" in text and "lineaments " in text
    (out / "lineaments.json").write_text(json.dumps({"summary": {"mean_classical_2": {"f1": 0.123}}}))
    assert lode(["bench", "--report-only", "--only", "lineaments", "--out", str(out), "--readme", str(readme)]) == 0
    assert "| lineaments | F1 at 2 cells, classical | 0.123 |" in readme.read_text()
    assert (out / "BENCHMARKS.md").read_text() in readme.read_text()


def test_every_benchmark_module_has_headline_figures_and_a_quick_mode():
    names = set(_names(None))
    assert {"segment_throughput", "sampler", "colour", "xpl", "prospect"} <= names
    assert names <= set(HEADLINES) and names <= set(QUICK)
