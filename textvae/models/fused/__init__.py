"""Horizontal fusion: R ablation rows of one shape trained as one model whose weights carry a leading
row dimension (HFTA, Wang et al. 2021), so each kernel does R rows' work for one launch.

``grouped``: embedding, linear and LSTM layers with per-row weights (batched matmul: cuDNN takes no
per-row weights); ``vae``: the fused LSTM VAE, built from R unfused models and split back into them;
``remedies``: what makes the rows differ, as (R,) tensors; ``noise``: each row's draws from its own
generator, as its unfused run draws them; ``optimizer``: per-row SGD and Adam, clipping by each row's
own norm, a non-finite step skipped for that row only; ``step``: one fused training step.

Shape letters: R rows (fused models), B sentences, T time, E embedding, H hidden, D latent, V vocab.
"""
