"""How a training step runs fast on a GPU: the sync-free step, its CUDA graphs, the graphed stepper, MPS."""
