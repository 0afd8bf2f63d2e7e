"""The job contract: every subcommand is a declared Job, and run_job is the one place a failure becomes
one line, an exit code and a manifest record."""

from __future__ import annotations

import json

import pytest

from engine.errors import LodeInputError
from engine.io.manifest import manifest_path
from jobs.cli import SUBCOMMANDS, load_job
from jobs.cli import main as lode


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_declares_its_job(name):
    job = load_job(name)
    assert job.name == name and job.description
    assert "--config" in job.parser().format_help()
    assert job.model().model_json_schema()


def test_a_failed_job_records_its_error_in_the_manifest(tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"job": "earlier", "status": "complete", "run": 1}))
    missing = tmp_path / "no-deposits.csv"
    assert (
        lode(["prospect", "evaluate", "--map", str(tmp_path / "m.zarr"), "--deposits", str(missing), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert err == f"lode prospect: error: {missing}: deposits file not found\n"
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["status"] == "failed" and doc["error"] == f"{missing}: deposits file not found"
    assert doc["previous"]["run"] == 1


def test_an_unexpected_error_is_recorded_and_raised(tmp_path, monkeypatch):
    out = tmp_path / "region"
    out.mkdir()

    def broken(cfg):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(load_job("synth"), "run", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        lode(["synth", "region", str(out)])
    doc = json.loads(open(manifest_path(out)).read())
    assert doc["status"] == "failed" and doc["error"] == "RuntimeError: disk on fire"


def test_an_input_error_from_any_job_body_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    def refuses(cfg):
        raise RuntimeError("wrapped") from LodeInputError(cfg.out, "not a region")

    monkeypatch.setattr(load_job("synth"), "run", refuses)
    assert lode(["synth", "region", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"lode synth: error: {tmp_path / 'r'}: not a region\n"
