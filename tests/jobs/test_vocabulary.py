"""One word per action across the CLI: ``synth`` only as the top-level job (one place per kind
of truth), ``evaluate`` for scoring against truth, and no subcommand named ``score``."""

import argparse

import pytest

from engine.errors import LodeInputError
from jobs.cli import SUBCOMMANDS, load_job


def _actions(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            found |= set(a.choices)
    return found


def _all_actions() -> dict[str, set[str]]:
    from jobs import lineaments

    out = {name: _actions(load_job(name).parser()) for name in SUBCOMMANDS}
    out["lineaments"] |= set(lineaments.ACTIONS)
    return out


def test_each_action_has_one_command():
    actions = _all_actions()
    assert {name for name, acts in actions.items() if "synth" in acts} == set()
    assert {"collection", "xpl", "panorama", "survey", "region"} <= actions["synth"]
    assert not any("score" in acts for acts in actions.values())
    assert "evaluate" in actions["lineaments"] and "evaluate" in actions["prospect"]


@pytest.mark.parametrize(("old", "new"), [("synth", "lode synth survey"), ("score", "lode lineaments evaluate")])
def test_a_moved_lineament_action_names_its_new_command(old, new):
    job = load_job("lineaments")
    cfg = job.validate(job.parser().parse_args([old, "--out", "x"]))
    with pytest.raises(LodeInputError, match=new):
        job.run(cfg)


@pytest.mark.ray
def test_synth_survey_writes_a_training_set_with_the_asked_spacing(tmp_path):
    import zarr

    from jobs.cli import main as lode

    out = tmp_path / "set.zarr"
    assert lode(["synth", "survey", str(out), "--n", "2", "--size", "32", "--spacing", "25", "--noise", "0"]) == 0
    group = zarr.open_group(str(out), mode="r")
    assert group["anomaly"].shape == (2, 32, 32)
    assert group.attrs["config"]["spacing_m"] == 25.0 and group.attrs["config"]["noise_nt"] == 0.0
