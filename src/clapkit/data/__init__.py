"""Data: audio I/O, audio-caption manifests, labelled sets and the embedded synthetic set."""

from .audio import AudioError, fix_length, load_audio, normalize
from .files import parse_spec
from .labelled import LabelledClip, load_labelled
from .manifests import Pair, load_pairs

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
