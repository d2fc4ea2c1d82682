"""Image-family models; importing this package registers each of them as an ``image_model`` component.

One import line per model module (an explicit list, no directory scanning)."""

import textvae.image.models.autoencoders
import textvae.image.models.pixelcnn
import textvae.image.models.tdvae
import textvae.image.models.vae
import textvae.image.models.vqvae
import textvae.image.models.vqvae2  # noqa: F401
