"""GPU check of the training engine (issue 15): on CUDA, a run killed and resumed ends with the
same weights and metrics as the uninterrupted run, for a text and an image family.

    PYTHONPATH=. python scripts/gpu_engine_check.py [--device cuda] [--data ../shared/data] [--out DIR]

For each family (the tiny PTB VAE of tests/test_engine.py with dropout, 40 SGD steps; the Burda
et al. 2015 MNIST VAE, 40 Adam steps): ``textvae train`` uninterrupted, twice (is the device
deterministic at all?); then ``textvae train`` killed by SIGKILL after step 23
(``TEXTVAE_FAULT=after_step:23``; checkpoints every 10 steps) and ``textvae train --resume``.
Prints one line per family: whether the two uninterrupted runs agree, and whether the resumed run
has the same final weights and ``metrics.jsonl`` (timing fields aside) as ``yes``/``NO``, and the
seconds of one run; exits 1 when a line says NO.
The CUDA RNG state travels in the checkpoint (``engine.state.rng_state``): this is what it checks.
With ``--device cpu`` it runs anywhere (the crash-safety tests check the same on the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
KILL_AFTER, STEPS = 23, 40


def text_recipe(data: Path) -> str:
    return f"""[data]
dataset = "ptb"
root = "{data / "ptb"}"
[model]
type = "vae"
latent_dim = 4
encoder = {{ type = "lstm", embed_dim = 16, hidden_dim = 16 }}
decoder = {{ type = "lstm", embed_dim = 16, hidden_dim = 16, dropout_in = 0.5, dropout_out = 0.5 }}
[train]
batch_size = 16
max_steps = {STEPS}
validate_every_steps = 10
max_valid_sentences = 40
log_every_steps = 5
checkpoint_every_steps = 10
progress_bar = false
"""


def image_recipe(data: Path) -> str:
    return f"""[data]
dataset = "mnist"
root = "{data / "mnist"}"
binarize = true
[model]
type = "vae"
latent_dim = 50
hidden_dims = [200, 200]
activation = "tanh"
[train]
optimizer = "adam"
lr = 1e-3
batch_size = 100
max_steps = {STEPS}
validate_every_steps = 10
max_valid_sentences = 100
log_every_steps = 5
checkpoint_every_steps = 10
progress_bar = false
"""


def textvae_train(recipe: Path, out: Path, device: str, *extra: str, fault: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TEXTVAE_FAULT"}
    env["PYTHONPATH"] = str(REPO)
    if fault:
        env["TEXTVAE_FAULT"] = fault
    command = [
        sys.executable,
        "-m",
        "textvae",
        "train",
        str(recipe),
        "--out",
        str(out),
        "--set",
        f"train.device={device!r}",
    ]
    return subprocess.run([*command, *extra], env=env, cwd=REPO, capture_output=True, text=True).returncode


def weights_digest(run_dir: Path) -> str:
    from textvae.checkpoint import read_checkpoint

    state = read_checkpoint(run_dir / "last.pt")["model"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(
            name.encode() + state[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    timing = ("tokens_per_s", "images_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


def check(name: str, recipe_text: str, root: Path, device: str) -> bool:
    recipe = root / f"{name}.toml"
    recipe.write_text(recipe_text, encoding="utf-8")
    reference, twice, resumed = (root / f"{name}_{kind}" for kind in ("reference", "twice", "resumed"))
    started = time.perf_counter()
    if textvae_train(recipe, reference, device) != 0 or textvae_train(recipe, twice, device) != 0:
        print(f"{name}: an uninterrupted run failed")
        return False
    seconds = (time.perf_counter() - started) / 2
    killed = textvae_train(recipe, resumed, device, fault=f"after_step:{KILL_AFTER}")
    again = textvae_train(recipe, resumed, device, "--resume")
    deterministic = weights_digest(reference) == weights_digest(twice) and metrics(reference) == metrics(twice)
    same_weights = weights_digest(reference) == weights_digest(resumed)
    same_metrics = metrics(reference) == metrics(resumed)
    yes = {True: "yes", False: "NO"}
    print(
        f"{name} on {device}: two uninterrupted runs equal {yes[deterministic]}; killed rc {killed}, resumed rc "
        f"{again}; resumed = uninterrupted: weights {yes[same_weights]}, metrics {yes[same_metrics]}; "
        f"{STEPS} steps in {seconds:.1f} s (incl. start-up)"
    )
    return killed == -9 and again == 0 and deterministic and same_weights and same_metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("needs CUDA (or --device cpu)")
        return 2
    root = args.out or Path(tempfile.mkdtemp(prefix="gpu_engine_check_"))
    root.mkdir(parents=True, exist_ok=True)
    results = [
        check(name, make(args.data.resolve()), root, args.device)
        for name, make in (("text", text_recipe), ("image", image_recipe))
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
