"""Image-family models; importing this package registers each of them as an ``image_model`` component.

One import line per model module (an explicit list, no directory scanning)."""
