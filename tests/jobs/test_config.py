"""Job config files: JSON Schema per job, validation by the pydantic models, CLI overrides, URIs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import jsonschema
import pytest
import yaml

from jobs import prospect, segment, stitch
from jobs.cli import SUBCOMMANDS, load_job
from jobs.contract import parse
from schemas.config import SegmentConfig

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted(set(SUBCOMMANDS) - {"config"})


@pytest.mark.parametrize("job", JOBS)
def test_lode_config_schema_prints_a_valid_json_schema_of_the_jobs_options(job):
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "config", "schema", job],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == load_job(job).model().model_json_schema()


def test_segment_schema_is_the_hand_written_model():
    assert load_job("segment").model().model_json_schema() == SegmentConfig.model_json_schema()


def test_yaml_config_fills_options_and_the_command_line_overrides_it(tmp_path):
    cfg = tmp_path / "stitch.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "collection": "/data/captures",
                "out": "/data/p.zarr",
                "shard": 1024,
                "levels": 4,
                "pattern": "7x5",
                "no_lens": True,
            }
        )
    )
    args = parse(stitch.JOB, ["--config", str(cfg), "--shard", "512"])
    assert args.collection == "/data/captures" and args.out == "/data/p.zarr"
    assert args.shard == 512 and args.levels == 4 and args.pattern == (7, 5) and args.no_lens is True
    assert args.num_cpus == 2 and args.sections is None
    schema = load_job("stitch").model().model_json_schema()
    jsonschema.validate(yaml.safe_load(cfg.read_text()), schema)


def test_config_errors_name_the_file_and_the_option(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"collection": "c", "out": "o.zarr", "shardd": 3}))
    with pytest.raises(SystemExit) as exc:
        parse(stitch.JOB, ["--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "shardd" in err
    cfg.write_text(json.dumps({"collection": "c", "out": "o.zarr", "levels": "many"}))
    with pytest.raises(SystemExit):
        parse(stitch.JOB, ["--config", str(cfg)])
    assert "levels" in capsys.readouterr().err
    cfg.write_text(json.dumps({"out": "o.zarr"}))
    with pytest.raises(SystemExit):
        parse(stitch.JOB, ["--config", str(cfg)])
    assert "collection" in capsys.readouterr().err


def test_config_for_a_job_with_actions_selects_the_action(tmp_path):
    cfg = tmp_path / "map.json"
    cfg.write_text(json.dumps({"action": "map", "stack": "s.zarr", "method": "pca", "out": "m.zarr"}))
    args = parse(prospect.JOB, ["--config", str(cfg)])
    assert (args.action, args.method, args.block, args.sigma) == ("map", "pca", 512, 0.0)
    args = parse(prospect.JOB, ["map", "--config", str(cfg), "--block", "256"])
    assert (args.action, args.method, args.block, args.sigma) == ("map", "pca", 256, 0.0)
    assert args.stack == Path("s.zarr") and args.out == Path("m.zarr")
    cfg.write_text(json.dumps({"action": "map", "stack": "s.zarr", "method": "kmeans", "out": "m.zarr"}))
    with pytest.raises(SystemExit):
        parse(prospect.JOB, ["--config", str(cfg)])


def test_config_file_from_an_fsspec_uri_and_the_segment_model():
    uri = "memory://lode-test/segment.json"
    with fsspec.open(uri, "wt") as f:
        json.dump({"inputs": ["a.zarr"], "out": "run", "checkpoint": "m.pt", "chunk": 256, "batch_size": 4}, f)
    args = parse(segment.JOB, ["--config", uri, "--batch-size", "2"])
    assert args.inputs == ["a.zarr"] and args.batch_size == 2
    cfg = segment.JOB.validate(args)
    assert (cfg.chunk, cfg.batch_size, cfg.checkpoint) == (256, 2, "m.pt")
    with fsspec.open(uri, "wt") as f:
        json.dump({"inputs": ["a.zarr"], "out": "run", "checkpoint": "m.pt", "window": 8}, f)
    with pytest.raises(SystemExit):
        parse(segment.JOB, ["--config", uri])


def test_lode_config_check_validates_a_file(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("data: ds\nout: model\nsteps: 5\n")
    bad.write_text("data: ds\nout: model\nsteps: 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "config", "check", "train", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["steps"] == 5
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "config", "check", "train", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and str(bad) in r.stderr and "steps" in r.stderr
