import json

from tests.jobs.test_bad_input import earlier_output, fails_naming  # noqa: F401 (a fixture)


def test_stitch_refuses_sections_in_flight_below_one_from_a_config(tmp_path, capsys, earlier_output):
    out = earlier_output
    coll = tmp_path / "coll"
    (coll / "s1" / "tiles").mkdir(parents=True)
    config = tmp_path / "stitch.json"
    config.write_text(json.dumps({"collection": str(coll), "out": str(out), "sections_in_flight": 0}))
    fails_naming(["stitch", "--config", str(config)], "--sections-in-flight", capsys, out, "at least 1")
