import json

import numpy as np
import pytest
import soundfile as sf

from clapkit.data.audio.captions import load_pairs
from clapkit.data.audio.labelled import load_labelled
from clapkit.data.files import Skipped
from clapkit.errors import DataError


def _wav(path, seconds=0.1, sr=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(sr * seconds)).astype(np.float32), sr)


def test_clotho_pairs_every_caption(tmp_path):
    _wav(tmp_path / "audio" / "a b.wav")
    _wav(tmp_path / "audio" / "c.wav")
    (tmp_path / "dev.csv").write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        'a b.wav,one,two,three,four,"five, with a comma"\n'
        "c.wav,six,seven,eight,nine,ten\n"
    )
    pairs = load_pairs(f"clotho:{tmp_path / 'dev.csv'}", audio_dir=tmp_path / "audio")
    assert len(pairs) == 10
    assert [p.caption for p in pairs[:5]] == ["one", "two", "three", "four", "five, with a comma"]
    assert pairs[0].media == tmp_path / "audio" / "a b.wav"
    assert len({p.media_id for p in pairs}) == 2


def test_audiocaps_pattern_and_default_patterns(tmp_path):
    _wav(tmp_path / "Y--abc.wav")
    _wav(tmp_path / "xyz_30.flac")
    (tmp_path / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n1,--abc,0,A dog barks\n2,xyz,30,Rain falls\n"
    )
    pairs = load_pairs(f"audiocaps:{tmp_path / 'train.csv'}", audio_dir=tmp_path)
    assert [p.media.name for p in pairs] == ["Y--abc.wav", "xyz_30.flac"]
    with pytest.raises(DataError, match=r"train.csv line 2.*tried --abc\.wav"):
        load_pairs(f"audiocaps:{tmp_path / 'train.csv'}", audio_dir=tmp_path, audiocaps_pattern="{youtube_id}.wav")


@pytest.mark.parametrize("ext", [".wav", ".flac"])
@pytest.mark.parametrize(
    "name",
    [
        "-0Gj8-vB1q4_30{ext}",  # {youtube_id}_{start_time}
        "Y-0Gj8-vB1q4{ext}",  # Y{youtube_id} (PANNs' AudioSet download)
        "-0Gj8-vB1q4{ext}",  # {youtube_id} (audiocaps-download)
        "91139{ext}",  # {audiocap_id}
        "Y-0Gj8-vB1q4_30.000_40.000{ext}",  # AudioSet's Y{id}_{start}.000_{end}.000
    ],
)
def test_audiocaps_every_default_pattern_finds_its_download_name(tmp_path, name, ext):
    """Each default pattern matches a file named as the usual AudioCaps/AudioSet
    downloads name them (the dots of ``30.000`` are not an extension)."""
    _wav(tmp_path / name.format(ext=ext))
    (tmp_path / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n91139,-0Gj8-vB1q4,30,Water pours\n")
    pairs = load_pairs(f"audiocaps:{tmp_path / 'train.csv'}", audio_dir=tmp_path)
    assert [p.media.name for p in pairs] == [name.format(ext=ext)]


def test_csv_and_jsonl(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("audio,caption\na.wav,hello\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "a.wav", "caption": ["x", "y"]}) + "\n")
    assert [p.caption for p in load_pairs(f"csv:{tmp_path / 'm.csv'}")] == ["hello"]
    assert [p.caption for p in load_pairs(f"jsonl:{tmp_path / 'm.jsonl'}")] == ["x", "y"]
    (tmp_path / "o.csv").write_text("id,wav,text\n7,a.wav,other names\n")
    pairs = load_pairs(f"csv:{tmp_path / 'o.csv'}", audio_column="wav", caption_column="text")
    assert [(p.media.name, p.caption) for p in pairs] == [("a.wav", "other names")]


@pytest.mark.parametrize(
    "body,message",
    [
        ("audio,caption\na.wav,\n", r"m.csv line 2.*empty caption"),
        ("audio,caption\nnope.wav,hi\n", r"m.csv line 2.*audio file not found"),
        ("audio,caption\na.wav,hi,extra\n", r"m.csv line 2.*3 fields but the header has 2"),
        ("audio,caption\na.wav\n", r"m.csv line 2.*row is short"),
        ("file,text\na.wav,hi\n", r"m.csv line 1.*missing column\(s\) audio, caption"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, body, message):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        load_pairs(f"csv:{tmp_path / 'm.csv'}")


def test_skip_bad_counts_every_skipped_row(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("audio,caption\na.wav,good\na.wav,\nmissing.wav,x\na.wav,also good\n")
    skipped = Skipped()
    pairs = load_pairs(f"csv:{tmp_path / 'm.csv'}", skip_bad=True, skipped=skipped)
    assert [p.caption for p in pairs] == ["good", "also good"]
    assert skipped.count == 2
    assert skipped.to_dict()["by_reason"] == {"empty caption": 1, "audio file not found": 1}


def test_non_utf8_and_bad_json(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"audio,caption\na.wav,caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_pairs(f"csv:{tmp_path / 'm.csv'}")
    (tmp_path / "m.jsonl").write_text('{"audio": "a.wav"\n')
    with pytest.raises(DataError, match="m.jsonl line 1: not valid JSON"):
        load_pairs(f"jsonl:{tmp_path / 'm.jsonl'}")


def test_bad_spec():
    with pytest.raises(DataError, match="expected KIND:PATH"):
        load_pairs("tsv:foo.tsv")


def test_esc50_fixture_with_renamed_audio_and_folds(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-1-A-0.wav,1,0,dog,True,1,A\n1-2-A-1.wav,2,1,door_wood_knock,False,2,A\n"
    )
    _wav(tmp_path / "audio" / "1-1-A-0.ogg")
    _wav(tmp_path / "audio" / "1-2-A-1.wav")
    ds = load_labelled(f"esc50:{tmp_path}")
    assert ds.class_names == ["dog", "door_wood_knock"]
    assert ds.label_texts() == ["dog", "door wood knock"]
    assert ds.clips[0].media.suffix == ".ogg"
    assert [c.fold for c in load_labelled(f"esc50:{tmp_path}", folds=[2]).clips] == [2]
    sel = load_labelled(f"esc50:{tmp_path}", classes=["door_wood_knock"])
    assert sel.class_names == ["door_wood_knock"] and sel.clips[0].label == 0


def test_esc50_missing_audio_error_and_skip(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category\n1-1-A-0.wav,1,0,dog\n1-2-A-1.wav,1,1,cat\n"
    )
    _wav(tmp_path / "audio" / "1-1-A-0.wav")
    with pytest.raises(DataError, match=r"esc50.csv line 3.*audio file not found"):
        load_labelled(f"esc50:{tmp_path}")
    ds = load_labelled(f"esc50:{tmp_path}", skip_bad=True)
    assert len(ds.clips) == 1 and ds.skipped.count == 1


def test_folder_layout(tmp_path):
    _wav(tmp_path / "b_class" / "x.wav")
    _wav(tmp_path / "a_class" / "y.flac")
    _wav(tmp_path / "a_class" / "z.ogg")
    ds = load_labelled(f"folder:{tmp_path}")
    assert ds.class_names == ["a_class", "b_class"]
    assert sorted(c.label for c in ds.clips) == [0, 0, 1]


def test_shared_esc50(shared_data):
    ds = load_labelled(f"esc50:{shared_data / 'esc50'}")
    assert len(ds.clips) == 414 and len(ds.class_names) == 50
    assert ds.class_names[0] == "dog" and ds.class_names[49] == "hand_saw"
    fold4 = load_labelled(f"esc50:{shared_data / 'esc50'}", folds=[4])
    assert len(fold4.clips) == 400
    assert np.bincount([c.label for c in fold4.clips]).tolist() == [8] * 50


def test_shared_caption_files(shared_data):
    cap = shared_data / "captions"
    dev = load_pairs(f"clotho:{cap / 'clotho' / 'development.csv'}", require_audio=False)
    assert len(dev) == 3839 * 5 and len({p.media_id for p in dev}) == 3839
    ac = load_pairs(f"audiocaps:{cap / 'audiocaps' / 'train.csv'}", require_audio=False)
    assert len(ac) == 49838
    assert all(p.caption for p in ac)


def test_labelled_sets_as_training_pairs(tmp_path):
    _wav(tmp_path / "dog_bark" / "a.wav")
    _wav(tmp_path / "rain" / "b.wav")
    pairs = load_pairs(f"folder:{tmp_path}", label_templates=["{label}.", "the sound of {label}"])
    assert [p.caption for p in pairs] == ["dog bark.", "the sound of dog bark", "rain.", "the sound of rain"]


def test_text_lines(tmp_path):
    from clapkit.data.files import read_lines

    (tmp_path / "t.txt").write_text("a dog\n\nrain\n")
    with pytest.raises(DataError, match="t.txt line 2: empty line"):
        read_lines(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("a dog\nrain\n")
    assert read_lines(tmp_path / "t.txt") == ["a dog", "rain"]
