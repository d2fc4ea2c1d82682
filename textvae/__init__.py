"""textvae: text variational autoencoders and posterior-collapse ablations, measured honestly."""

__version__ = "0.1.0"


def load(path, which: str = "best", device: str = "cpu"):
    """Load a trained model from a run directory (its ``best.pt``), a checkpoint file or a directory
    written by ``textvae export`` (``which`` does not apply to it).

    Returns a :class:`textvae.api.TextModel` with ``encode``, ``log_likelihood``, ``generate``,
    ``reconstruct``, ``sample`` and ``interpolate``, on ``device`` (``cpu``, ``cuda`` or ``auto``:
    the GPU when CUDA is available); its tensors come back on that device.
    """
    from textvae.api import TextModel

    return TextModel.from_checkpoint(path, which=which, device=device)
