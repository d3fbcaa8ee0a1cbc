"""Images: decoding (:mod:`.io`), caption manifests (:mod:`.captions`), labelled sets
(:mod:`.labelled`) and the embedded synthetic set (:mod:`.synthetic`). The tensors they
become are made in :mod:`clapkit.data.image_datasets`, the one image pipeline."""

from .io import IMAGE_EXTENSIONS, check_images, open_image

__all__ = ["IMAGE_EXTENSIONS", "check_images", "open_image"]
