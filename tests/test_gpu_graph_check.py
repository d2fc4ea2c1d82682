"""scripts/gpu_graph_check.py runs on a CPU (graph rows n/a or simulated): its code paths work."""

import importlib.util
import json
import random

from tests.conftest import REPO


def _tiny_ptb(root):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    for split, count in (("train", 400), ("valid", 20), ("test", 20)):
        lines = (" ".join(rng.choice(words) for _ in range(rng.choice((4, 5, 6)))) for _ in range(count))
        (root / f"ptb.{split}.txt").write_text("".join(f" {line} \n" for line in lines), encoding="utf-8")


def test_the_gpu_check_runs_on_a_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_graph_check", REPO / "scripts" / "gpu_graph_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _tiny_ptb(tmp_path)
    out = tmp_path / "check.json"
    args = ["--device", "cpu", "--tiny", "--hidden", "8", "--steps", "6", "--timing-steps", "2", "--engine-steps", "3"]
    assert script.main([*args, "--remedy-steps", "3", "--data", str(tmp_path), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["row"]: row for row in result["rows"]}
    assert result["versions"]["torch"] and len(rows) == 1 + 5 + 1 + len(script.REMEDY_ROWS)
    assert rows["engine H8: textvae train, graphs off vs on"]["graphed"]["steps"] == 3
    failed = {name: row["note"] for name, row in rows.items() if row.get("ok") is False}
    assert not failed  # a row that raised says so in its note
    check = rows["check H8"]
    assert check["eager"]["skipped"] == check["graphed"]["skipped"] == 1  # the injected nan batch
    assert check["max_rel_diff"] == 0.0  # a simulated capture replays the same step
    assert rows["timing H8: graphed reference"]["note"].startswith("n/a")
    assert all(rows[f"remedy H256: {name}"]["captures"] == 1 for name in script.REMEDY_ROWS)
