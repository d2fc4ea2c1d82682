"""textvae: text variational autoencoders and posterior-collapse ablations, measured honestly."""

__version__ = "0.1.0"


def load(path, which: str | None = None, device: str = "cpu"):
    """Load a trained model from a run directory (its ``best.pt``, or ``which="last"``), a checkpoint
    file, a directory written by ``textvae export``, or a model shipped with textvae by its name:
    ``textvae.load("kjv")``, the pretrained KJV sentence VAE (a local folder called ``kjv`` wins, with a
    warning). An exported or shipped model has one weights file, so ``which`` does not apply to it.

    Returns a :class:`textvae.api.TextModel` with ``encode``, ``log_likelihood``, ``generate``,
    ``reconstruct``, ``sample`` and ``interpolate``, on ``device`` (``cpu``, ``cuda`` or ``auto``:
    the GPU when CUDA is available); its tensors come back on that device.
    """
    from textvae.api import TextModel

    return TextModel.from_checkpoint(path, which=which, device=device)
