"""Models that travel: the exported model directory, loading any model folder, where files next to a model go.

- ``model_dir``: the exported directory's format (``config.json``, ``model.safetensors``,
  ``vocab.json``, the tokenizer files) written and read back, checked;
- ``card``: its ``README.md`` model card;
- ``export``: ``textvae export RUN OUT_DIR``;
- ``load``: a model from a run directory, a checkpoint file or an exported directory;
- ``output_dir``: the one rule for files a command writes next to a model.
"""
