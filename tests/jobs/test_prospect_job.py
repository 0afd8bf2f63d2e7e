import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine.prospect.score import read_score
from jobs import prospect
from jobs.cli import main as lode


def _parse(argv):
    """The validated config ``run`` receives."""
    return prospect.JOB.validate(prospect.JOB.parser().parse_args(argv))


def test_help_without_ray(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["evaluate", "--help"])
    assert e.value.code == 0
    assert "--deposits" in capsys.readouterr().out


def test_synth_stack_map_evaluate(tmp_path):
    r, s, m, ev = tmp_path / "r", tmp_path / "s.zarr", tmp_path / "m.zarr", tmp_path / "eval"
    assert lode(["synth", "region", str(r), "--size", "96", "--seed", "4"]) == 0
    assert prospect.run(_parse(["stack", "--spec", str(r / "layers.json"), "--out", str(s)])) == 0
    assert (
        prospect.run(
            _parse(
                [
                    "map",
                    "--stack",
                    str(s),
                    "--method",
                    "pca",
                    "--out",
                    str(m),
                    "--no-ray",
                    "--geotiff",
                    str(tmp_path / "m.tif"),
                ]
            )
        )
        == 0
    )
    assert (
        prospect.run(
            _parse(
                ["evaluate", "--map", str(m), "--deposits", str(r / "deposits.csv"), "--split", "all", "--out", str(ev)]
            )
        )
        == 0
    )
    data = json.loads((ev / "metrics.json").read_text())
    n = len(pd.read_csv(r / "deposits.csv"))
    assert data["maps"]["pca"]["n_deposits"] == n
    dep = pd.read_csv(r / "deposits.csv")
    score = read_score(m)
    truth = np.zeros(score.shape, bool)
    truth[dep["row"], dep["col"]] = True
    valid = np.isfinite(score)
    assert data["maps"]["pca"]["auc"] == pytest.approx(roc_auc_score(truth[valid], score[valid]), abs=1e-9)
    assert (
        (ev / "success_rate.png").exists()
        and (ev / "prediction_area_pca.png").exists()
        and (tmp_path / "m.tif").exists()
    )


def test_bad_input_exit_code(tmp_path, capsys):
    assert lode(["prospect", "stack", "--spec", str(tmp_path / "nope.json"), "--out", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.json" in err and err.startswith("lode prospect: error: ")


def test_synth_region_with_points_stacks_from_the_samples(tmp_path):
    import zarr

    r, s = tmp_path / "r", tmp_path / "s.zarr"
    assert lode(["synth", "region", str(r), "--size", "64", "--seed", "1", "--points", "0.5"]) == 0
    samples = pd.read_csv(r / "samples.csv")
    assert len(samples) == 64 * 64 // 2 and {"x", "y", "crs", "Cu", "Ni"} <= set(samples.columns)
    assert prospect.run(_parse(["stack", "--spec", str(r / "points.json"), "--out", str(s)])) == 0
    layers = zarr.open_group(s, mode="r").attrs["layers"]
    assert [m["channel"] for m in layers if "points" in m] == ["Cu", "Au", "As", "Zn", "Ni"]
    counts = {m["channel"]: m["points"]["samples"] for m in layers if "points" in m}
    assert counts == {el: int(samples[el].notna().sum()) for el in counts}  # no-data samples left out
