"""``textvae bench``: how close the toolkit runs to this machine's compute limit, each figure beside its baseline.

    textvae bench [--json OUT] [--quick] [--device cpu|cuda] [--threads N] [--data-root DIR]

The machine is noisy (other processes, clock changes), so every figure is measured in this one
process beside the baseline it is compared with: the runs being compared take turns, round after
round, and each keeps its best round; the matmul peak is measured between rounds and its best is
kept. The model is He et al. 2019's PTB LSTM VAE widened to hidden 512 (embedding 256, latent 32,
batch 32, dropout 0.5 in and out; V = 10,002: PTB's 9,998 words, <unk>, pad, BOS, EOS).

Rows of the table (figure | baseline | ratio):
1. matmul peak: an fp32 2048³ matrix product at the same thread count, GFLOP/s.
2. training on PTB train batches, SGD lr 1.0 (He et al. 2019; the headline) and Adam lr 1e-3:
   target tokens/s of the toolkit's step (the ``standard`` strategy: forward, honest terms,
   objective, backward, finiteness check, gradient clipping at 5, optimizer step, the loop's
   running sums), its FLOP/s against the matmul peak (and, per round, against the matmul measured
   right after that round: the median of those ratios), and tokens/s of the plain-PyTorch step of
   ``benchmarks/reference_step.py`` on the same batches from the same weights.
3. remedies: the quickstart stack (KL annealing + word dropout + free bits + bag-of-words) against
   the plain VAE step; IAF and aggressive training (He et al. 2019) each on its own row.
4. IW-NLL on PTB test sentences, K = 500 in chunks of 100: sentences/s and FLOP/s of
   ``textvae.evaluation.importance.importance_log_weights`` (two batches of 32 sentences drawn from the
   length-sorted test set, as ``textvae eval`` batches it; the encoder once per sentence; the
   decoder's embedding-side input projection shared by the K samples) against
   ``benchmarks/naive_iw_nll.py`` (one sentence at a time, 100 samples per pass), in turns, each
   batch timed twice and its best time kept.
5. decoders at equal width (512): tokens/s and FLOP/s of the LSTM decoder and of each dilated-CNN
   preset (Yang et al. 2017), in a VAE with an LSTM encoder of 256, Adam.
6. memory: peak RSS while training and while evaluating IW-NLL on PTB and on a synthetic corpus
   10× larger (PTB training sentences drawn with replacement, memory-mapped like any corpus), with
   batches of the same shapes on both (sentences of one long length), and of IW-NLL at K = 50 and
   K = 500, both in chunks of 50 samples, after one unmeasured IW-NLL pass.

FLOPs are counted analytically (``train_flops``, ``iw_flops``): 2 × the multiply–accumulates of
every matrix product on the real tokens (padding is not useful work), ×3 for training. See
``flops.train_flops`` for the derivation. ``--quick`` runs 3 rounds of 4 training steps (3 for the
remedy and decoder rows) and IW-NLL on one batch of 8 sentences (a smaller batch: a lower rate).

7. on a GPU (issue 17): eager and CUDA-graphed training steps, toolkit and plain PyTorch
   (``graphs``); aggregate model-steps/s of 1, 4 and 8 processes, time-sliced and through MPS
   (``processes``, run first); the image MLP's images/s, eager and graphed (``image``). On a CPU
   the CUDA-only rows say "needs CUDA". ``python -m textvae.bench.gpu`` (``scripts/gpu_bench.sh``)
   runs only these, in about a minute on an H200.

One measurement per module: ``clock`` (timing, matmul peak), ``models`` (sizes, the model, the
optimizers), ``corpus`` (PTB, the scaled copy, batches), ``flops``, ``training``, ``remedies``,
``iw_nll``, ``decoders``, ``memory``, ``graphs``, ``processes``, ``image``; ``summary`` makes the
JSON's headline figures, ``report`` the table; ``suite`` runs the sections and is the command
(``textvae.cli`` calls ``command``); ``references`` loads the plain-PyTorch baselines of
``benchmarks/``. A section that fails is one row of the table with its error.
"""

from .flops import forward_macs, iw_flops, train_flops
from .models import FULL, QUICK, SIZES, TINY, Sizes, vae_spec
from .report import table
from .suite import command, run

__all__ = [
    "FULL",
    "QUICK",
    "SIZES",
    "TINY",
    "Sizes",
    "command",
    "forward_macs",
    "iw_flops",
    "run",
    "table",
    "train_flops",
    "vae_spec",
]
