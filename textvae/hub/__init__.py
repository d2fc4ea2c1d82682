"""Models that travel: the exported model directory, its model card, where files next to a model go.
(``textvae.api.load_model`` loads a run directory, a checkpoint file or an exported directory alike.)

- ``model_dir``: the exported directory's format (``config.json``, ``model.safetensors``,
  ``vocab.json``, the tokenizer files) written and read back, checked;
- ``card``: its ``README.md`` model card;
- ``export``: ``textvae export RUN OUT_DIR``;
- ``output_dir``: the one rule for files a command writes next to a model;
- ``shipped``: the models shipped in the package (``pretrained/kjv``), looked up by name.
"""
