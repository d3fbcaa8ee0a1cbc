import numpy as np
import pytest
import soundfile as sf

from clapkit.data.audio import AudioError, fix_length, load_audio, normalize, resolve_audio


def _tone(sr, seconds=0.5, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_formats_decode_and_resample(tmp_path, ext, subtype):
    path = tmp_path / f"x{ext}"
    sf.write(path, _tone(8000), 8000, subtype=subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32
    assert abs(len(wave) - 8000) <= 2  # 0.5 s at 16 kHz
    # the 440 Hz tone survives resampling: spectral peak at 440 Hz
    spec = np.abs(np.fft.rfft(wave[:8000]))
    assert abs(np.argmax(spec) * 16000 / 8000 - 440) <= 2


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = _tone(8000), np.zeros(4000, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 8000, subtype="FLOAT")
    wave = load_audio(tmp_path / "s.wav", 8000)
    np.testing.assert_allclose(wave, left / 2, atol=1e-6)


def test_fix_length_pad_centre_and_random():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 12), np.r_[x, 0, 0])
    np.testing.assert_array_equal(fix_length(x, 4), x[3:7])  # centre
    a = fix_length(x, 4, np.random.default_rng(1))
    b = fix_length(x, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    starts = {int(fix_length(x, 4, np.random.default_rng(s))[0]) for s in range(50)}
    assert starts == set(range(7))  # every start 0..6 reachable


def test_normalize_zero_mean_unit_variance_and_silence():
    x = np.random.default_rng(0).normal(3, 2, 1000).astype(np.float32)
    y = normalize(x)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-4
    np.testing.assert_array_equal(normalize(np.zeros(10, np.float32)), np.zeros(10))


def test_corrupt_missing_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="bad.wav.*cannot decode"):
        load_audio(bad, 16000, where="train.csv line 3")
    with pytest.raises(AudioError, match="train.csv line 3"):
        load_audio(bad, 16000, where="train.csv line 3")
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        load_audio(tmp_path / "missing.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 16000)


def test_resolve_audio_accepts_other_extension(tmp_path):
    sf.write(tmp_path / "a.ogg", _tone(8000), 8000)
    assert resolve_audio(tmp_path / "a.wav") == tmp_path / "a.ogg"


def test_shared_esc50_clip_decodes(shared_data):
    wave = load_audio(shared_data / "esc50" / "audio" / "4-102844-A-49.ogg", 44100)
    assert len(wave) == 220500  # 5 s at 44.1 kHz
