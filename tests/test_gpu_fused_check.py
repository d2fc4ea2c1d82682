"""scripts/gpu_fused_check.py runs on a CPU at tiny sizes (its graph row n/a): its code paths work."""

import importlib.util
import json

from tests.conftest import REPO


def test_the_fused_gpu_check_runs_on_a_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_fused_check", REPO / "scripts" / "gpu_fused_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "check.json"
    assert script.main(["--device", "cpu", "--tiny", "--steps", "2", "--rows", "1,3", "--out", str(out)]) == 0
    rows = {row["row"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["equal R=4", "timing one unfused row", "timing fused R=1", "timing fused R=3", "graph R=12"]
    assert rows["equal R=4"]["ok"] and rows["equal R=4"]["max_rel_diff"] < 1e-4
    assert all(rows[name]["row_steps_per_s"] > 0 for name in ("timing fused R=1", "timing fused R=3"))
    assert rows["graph R=12"]["note"].startswith("n/a")
