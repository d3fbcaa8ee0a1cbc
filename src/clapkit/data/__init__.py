"""Data, by medium, over a bottom of records and a registry of spec kinds.

==================  ====================================================================
``files``           reading files and rows, naming what is wrong; ``Skipped``
``records``         what every reader produces: ``Pair``, ``LabelledClip``/``LabelledSet``,
                    ``ArrayImage``
``specs``           the registry of ``KIND:PATH`` kinds (reader, role, media, layout,
                    example); ``clapkit formats`` prints it
``tables``          layouts audio and images share (caption tables, class folders)
``audio/``          decoding, caption manifests, labelled sets, the synthetic set
``image/``          decoding, caption manifests, labelled sets, the synthetic set
``text/``           corpora, class names, NLI, STS, SentEval
``shards/``         WebDataset shards, read in place and written
``datasets``        torch datasets and batch samplers (audio clips, seeded draws)
``image_datasets``  the one image pipeline (CLIP's transform, ``train cse``'s images)
``stream``          the shard stream for training by steps
``media``           the one switch between audio and images
==================  ====================================================================

Every module imports only those above it in this table (``media`` at the top).
"""

from .audio import AudioError, fix_length, load_audio, normalize
from .audio.captions import load_pairs
from .audio.labelled import load_labelled
from .files import parse_spec
from .records import LabelledClip, Pair

__all__ = [
    "AudioError",
    "LabelledClip",
    "Pair",
    "fix_length",
    "load_audio",
    "load_labelled",
    "load_pairs",
    "normalize",
    "parse_spec",
]
