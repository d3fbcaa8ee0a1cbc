"""Audio: decoding (:mod:`.io`), caption manifests (:mod:`.captions`), labelled sets
(:mod:`.labelled`) and the embedded synthetic set (:mod:`.synthetic`)."""

from .io import AUDIO_EXTENSIONS, AudioError, fix_length, load_audio, normalize, resolve_audio

__all__ = ["AUDIO_EXTENSIONS", "AudioError", "fix_length", "load_audio", "normalize", "resolve_audio"]
