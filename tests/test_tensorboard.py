"""train.tensorboard: the event files, read back with TensorBoard's own reader (no fake writer)."""

import json

import pytest

from tests.test_engine import LOGGED, PTB, SINGLE_PROCESS, EveryThirdStepNotFinite, text_recipe
from textvae.engine.loop import Engine
from textvae.train import TextFamily

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(run_dir):
    """Every scalar, histogram and text of RUN/tensorboard, as TensorBoard loads them."""
    everything = {"scalars": 0, "histograms": 0, "tensors": 0}  # 0: keep every event (the default samples)
    reader = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance=everything)
    reader.Reload()
    return reader


def scalars(reader, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in reader.Scalars(tag)}


def test_the_event_files_hold_the_metrics_log_the_skipped_steps_and_the_recipe(tmp_path):
    logged = {**LOGGED, "log_every_steps": 4, "validate_every_steps": 4}
    recipe = text_recipe(PTB, max_steps=8, tensorboard=True, **logged)
    family = TextFamily(recipe, SINGLE_PROCESS)
    make_stepper = family.stepper
    family.stepper = lambda optimizer, forward: EveryThirdStepNotFinite(make_stepper(optimizer, forward))
    run = tmp_path / "run"
    summary = Engine(family, recipe, run, resume=False, context=SINGLE_PROCESS).run()
    assert summary.progress.skipped_steps == 3

    reader = read_events(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    train = [r for r in records if r["event"] == "train"]
    assert len(valid) >= 2 and len(train) >= 2
    for field in ("loss", "kl", "au", "mi"):  # float32 in the event file
        assert scalars(reader, f"valid/{field}") == pytest.approx({r["step"]: r[field] for r in valid}, rel=1e-6)
    assert scalars(reader, "train/loss") == pytest.approx({r["step"]: r["loss"] for r in train}, rel=1e-6)
    histogram = reader.Histograms("valid/kl_per_dim")
    assert [h.step for h in histogram] == [r["step"] for r in valid]
    assert histogram[-1].histogram_value.num == 4  # one value per latent dimension
    assert histogram[-1].histogram_value.sum == pytest.approx(sum(valid[-1]["kl_per_dim"]), rel=1e-6)

    skipped = [r for r in records if r["event"] == "skipped"]
    counts = scalars(reader, "train/skipped_steps")
    for number, record in enumerate(skipped, start=1):  # the count so far at each skipped step
        assert counts[record["step"]] >= number
    assert counts[max(counts)] == 3 == len(skipped)
    assert set(scalars(reader, "train/skipped_in_a_row").values()) == {1.0}

    (text,) = reader.Tensors("recipe/text_summary")
    shown = text.tensor_proto.string_val[0].decode("utf-8")
    assert json.loads("\n".join(line[4:] for line in shown.splitlines())) == json.loads(json.dumps(recipe.to_dict()))


def test_a_resumed_run_hides_what_the_killed_process_wrote_after_its_checkpoint(tmp_path):
    from textvae.engine.tensorboard import TensorBoardMirror

    log_dir = tmp_path / "tensorboard"
    first = TensorBoardMirror(log_dir)
    for step in (5, 10, 15):  # the checkpoint was at step 10; step 15 was written, then the process died
        first({"event": "train", "step": step, "loss": float(step)})
    first.close()
    second = TensorBoardMirror(log_dir, skipped=2, purge_step=11)
    second({"event": "train", "step": 15, "loss": 150.0})
    second.close()
    reader = event_accumulator.EventAccumulator(str(log_dir))
    reader.Reload()
    assert scalars(reader, "train/loss") == {5: 5.0, 10: 10.0, 15: 150.0}
    assert scalars(reader, "train/skipped_steps")[15] == 2.0  # the resumed count goes on
