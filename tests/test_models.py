import numpy as np
import pytest
import torch

from clapkit.errors import ConfigError
from clapkit.models.frontend import LogMel, PannsLogmel, PannsSpectrogram, mel_matrix
from clapkit.models.text import TextTower
from clapkit.models.towers.audio import Cnn14, SmallCNN, build_audio_tower


def published_cnn14_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``Cnn14_mAP=0.431.pth``'s ``model`` state dict, written out
    from the PANNs layout (not read from clapkit's module)."""
    shapes = {
        "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
        "logmel_extractor.melW": (513, 64),
    }

    def bn(prefix, n):
        shapes.update({f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                       f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()})

    bn("bn0", 64)
    widths = [1, 64, 128, 256, 512, 1024, 2048]
    for i in range(6):
        cin, cout = widths[i], widths[i + 1]
        shapes[f"conv_block{i + 1}.conv1.weight"] = (cout, cin, 3, 3)
        shapes[f"conv_block{i + 1}.conv2.weight"] = (cout, cout, 3, 3)
        bn(f"conv_block{i + 1}.bn1", cout)
        bn(f"conv_block{i + 1}.bn2", cout)
    shapes.update({"fc1.weight": (2048, 2048), "fc1.bias": (2048,),
                   "fc_audioset.weight": (527, 2048), "fc_audioset.bias": (527,)})
    return shapes


def test_cnn14_matches_published_layout():
    got = {k: tuple(v.shape) for k, v in Cnn14().state_dict().items()}
    assert got == published_cnn14_shapes()


def test_cnn14_loads_generated_checkpoint_strictly(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, shape in published_cnn14_shapes().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": state, "iteration": 600000}, path)
    cfg = {"name": "cnn14", "checkpoint": str(path), "n_fft": 1024, "hop_length": 320, "n_mels": 64,
           "fmin": 50.0, "fmax": 14000.0, "dropout": 0.2, "channels": None}
    tower = build_audio_tower(cfg, 32000)
    for k, v in tower.state_dict().items():
        assert torch.equal(v, state[k]), k
    out = tower.eval()(torch.randn(2, 32000))
    assert out.shape == (2, 2048)
    # a checkpoint with a wrong shape is refused with the file named
    state["fc1.weight"] = torch.zeros(10, 10)
    torch.save({"model": state}, path)
    with pytest.raises(ConfigError, match="Cnn14_mAP=0.431.pth: not a CNN14 checkpoint"):
        build_audio_tower(cfg, 32000)


def test_panns_frontend_equals_fft_frontend():
    x = torch.randn(2, 16000)
    fft = LogMel(32000, 1024, 320, 64, 50, 14000)(x)
    conv = PannsLogmel(32000, 1024, 64, 50, 14000)(PannsSpectrogram(1024, 320)(x))
    assert fft.shape == conv.shape == (2, 1, 51, 64)
    assert torch.allclose(fft, conv, atol=1e-3)


def test_mel_matrix_slaney_properties():
    m = mel_matrix(16000, 512, 40, 0, 8000)
    assert m.shape == (257, 40)
    assert (m >= 0).all()
    peaks = m.argmax(axis=0)
    assert (np.diff(peaks) >= 0).all()  # filters ordered by frequency
    # Slaney normalisation: each triangle has area 2 / (f_hi - f_lo) * width / 2 ~ constant energy
    assert np.allclose(m.sum(axis=0)[5:] * (16000 / 512), m.sum(axis=0)[5:].mean() * (16000 / 512), rtol=0.3)


def test_small_cnn_shapes_and_gradient():
    net = SmallCNN(8000, 256, 128, 16, 0, 4000, channels=[4, 8])
    x = torch.randn(3, 4000, requires_grad=True)
    y = net(x)
    assert y.shape == (3, net.embed_dim) == (3, 16)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("pooling", ["cls", "cls_before_pooler", "mean"])
def test_text_pooling(tiny_bert, pooling):
    tower = TextTower(tiny_bert, pooling, max_length=16).eval()
    tokens = tower.tokenize(["a dog barks loudly", "rain"])
    with torch.no_grad():
        got = tower(tokens)
        out = tower.model(**tokens)
    if pooling == "cls":
        expected = out.pooler_output
    elif pooling == "cls_before_pooler":
        expected = out.last_hidden_state[:, 0]
    else:
        mask = tokens["attention_mask"]
        expected = torch.stack([out.last_hidden_state[i, mask[i].bool()].mean(0) for i in range(2)])
    assert torch.allclose(got, expected, atol=1e-6)
    assert tower.embed_dim == 32


@pytest.mark.parametrize("pool,head,at_eval", [("first", "pooler", True), ("first", "none", True), ("mean", "none", True),
                                               ("first", "mlp", True), ("mean", "mlp", True), ("first", "mlp", False)])
def test_the_text_encoder_pools_then_applies_its_head(tiny_bert, tmp_path, pool, head, at_eval):
    """One class, two choices named apart; its sentence-transformers folder gives the same
    evaluation embedding (a Dense/Tanh for the pretrained pooler or an MLP used at evaluation)."""
    from sentence_transformers import SentenceTransformer

    from clapkit.models.text import TextEncoder

    enc = TextEncoder(tiny_bert, pool, head, at_eval, max_length=16).eval()
    texts = ["a dog barks loudly", "rain", "an engine idles while birds chirp"]
    tokens = enc.tokenize(texts)
    with torch.no_grad():
        got, out = enc(tokens), enc.backbone(**tokens)
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        state = out.last_hidden_state[:, 0] if pool == "first" else (out.last_hidden_state * mask).sum(1) / mask.sum(1)
        want = out.pooler_output if head == "pooler" else state
        if head == "mlp" and at_eval:
            want = enc.head(state)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        if head == "mlp":  # in training the MLP always applies (dropout off for the comparison)
            enc.backbone.eval()
            enc.training = True
            torch.testing.assert_close(enc(tokens), enc.head(state), atol=1e-6, rtol=1e-5)
            enc.training = False
    enc.save(tmp_path)
    st = SentenceTransformer(str(tmp_path), device="cpu")
    np.testing.assert_allclose(st.encode(texts), got.numpy(), atol=1e-5)
    assert (tmp_path / "2_Dense").is_dir() == (head == "pooler" or (head == "mlp" and at_eval))
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.pooler.") for n in trainable) == (head == "pooler")  # an unused pooler is frozen


@pytest.mark.parametrize("section,old,want", [
    ("model.text", "cls", ("first", "pooler", True)), ("cse.model", "cls", ("first", "mlp", False)),
    ("model.text", "cls_before_pooler", ("first", "none", True)), ("cse.model", "mean", ("mean", "none", False))])
def test_old_pooling_names_map_section_by_section(section, old, want):
    from clapkit.pooling import resolve_text_head

    assert resolve_text_head(section, {"pooling": old}) == want
    assert resolve_text_head(section, {"pooling": old, "pool": want[0], "head": want[1]}) == want  # agreeing: fine


def test_an_ambiguous_old_pooling_is_refused(tiny_bert):
    from clapkit.config import load_config
    from clapkit.pooling import resolve_text_head

    with pytest.raises(ConfigError, match=r"model.text.pooling = cls \(the old name\) means pool first, head pooler.*"
                                          r"say None / mlp: ambiguous"):
        load_config(None, ["model.text.pooling=cls", "model.text.head=mlp"])
    with pytest.raises(ConfigError, match="cse.model.mlp_only_train = True .* and cse.model.head_at_eval = True disagree"):
        resolve_text_head("cse.model", {"mlp_only_train": True, "head_at_eval": True})
    with pytest.raises(ConfigError, match="the old names are cls, cls_before_pooler, mean"):
        resolve_text_head("model.text", {"pooling": "max"})


def test_a_pretrained_pooler_the_backbone_lacks_is_refused(tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from clapkit.models.text import TextEncoder, TextTower, resolve_text_model

    DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=30522)).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve_text_model("minilm")).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model.text.head = pooler: .*DistilBertModel.* has no pretrained pooler"):
        TextEncoder(str(tmp_path), "first", "pooler")
    assert TextTower(str(tmp_path), "cls").head_type == "none"  # the old `cls` fell back to the first token


def test_text_tower_bad_name_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load a Hugging Face encoder"):
        TextTower(str(tmp_path / "no-such-model"))


def test_shipped_minilm_loads_offline():
    tower = TextTower("minilm", "mean")
    with torch.no_grad():
        e = tower(tower.tokenize(["a dog barks", "a dog is barking", "thunder and rain"]))
    e = torch.nn.functional.normalize(e, dim=1)
    assert e.shape == (3, 384)
    assert (e[0] @ e[1]) > (e[0] @ e[2])  # a real sentence encoder, not random weights


def _panns_cnn14():
    """PANNs' own Cnn14 (panns-inference ships audioset_tagging_cnn's model code) with
    random weights and non-trivial BatchNorm statistics."""
    from panns_inference.models import Cnn14 as PannsCnn14

    torch.manual_seed(0)
    theirs = PannsCnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                        classes_num=527)
    g = torch.Generator().manual_seed(1)
    for name, buf in theirs.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return theirs.eval()


def test_cnn14_embedding_equals_panns():
    """clapkit's CNN14 computes PANNs' ``Cnn14.forward`` embedding (log-mel front end,
    bn0, six conv blocks, max + mean over time, fc1), eval mode, same state dict."""
    theirs = _panns_cnn14()
    ours = Cnn14().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    wave = torch.randn(2, 32000 * 2, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        expected = theirs(wave)["embedding"]
        got = ours(wave)
    assert got.shape == expected.shape == (2, 2048)
    assert expected.abs().max() > 1e-3  # a non-trivial embedding
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cnn14_fresh_frontend_equals_torchlibrosa():
    """Without a checkpoint the STFT basis and mel filterbank are torchlibrosa's (librosa's)."""
    theirs, ours = _panns_cnn14().state_dict(), Cnn14().state_dict()
    for key in ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                "logmel_extractor.melW"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=1e-5)


def test_a_32k_panns_checkpoint_at_44k_keeps_its_weights_and_takes_the_44k_filterbank(tmp_path):
    """Every real `paper` run: PANNs' 32 kHz Cnn14 checkpoint loaded into a 44.1 kHz CNN14.
    The tower keeps the checkpoint's weights and rebuilds only the mel filterbank, so it
    equals PANNs' own Cnn14 built at 44.1 kHz with the checkpoint loaded around its own
    filterbank (the STFT basis depends on the window, not the rate)."""
    from panns_inference.models import Cnn14 as PannsCnn14

    from clapkit.models.towers.audio import build_cnn14

    state = _panns_cnn14().state_dict()
    torch.save({"model": state, "iteration": 0}, tmp_path / "Cnn14_mAP=0.431.pth")  # PANNs' checkpoint layout
    a = {"n_fft": 1024, "hop_length": 320, "n_mels": 64, "fmin": 50, "fmax": 14000, "dropout": 0.2,
         "checkpoint": str(tmp_path / "Cnn14_mAP=0.431.pth")}
    ours = build_cnn14(a, 44100).eval()
    theirs = PannsCnn14(sample_rate=44100, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
                        classes_num=527)
    melw_44k = theirs.logmel_extractor.melW.detach().clone()
    theirs.load_state_dict({**state, "logmel_extractor.melW": melw_44k}, strict=True)
    theirs.eval()
    torch.testing.assert_close(ours.logmel_extractor.melW, melw_44k, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours.logmel_extractor.melW, state["logmel_extractor.melW"])  # not the 32 kHz one
    mine = ours.state_dict()
    for key, value in state.items():
        if key != "logmel_extractor.melW":
            assert torch.equal(mine[key], value), key
    wave = torch.randn(2, 44100 * 2, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(ours(wave), theirs(wave)["embedding"], atol=1e-5, rtol=1e-5)


def test_cnn14_embedding_dropout_in_training():
    """PANNs drops out (p = 0.5) after relu(fc1) in training: each unit is 0 or twice
    relu(fc1); about half of the active units are dropped."""
    net = Cnn14().train()
    seen = {}
    net.fc1.register_forward_hook(lambda m, i, o: seen.update(fc1=o.detach()))
    torch.manual_seed(0)
    with torch.no_grad():
        out = net(torch.randn(4, 16000))
    active = torch.relu(seen["fc1"])
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * active[kept])
    dropped = ((active > 0) & ~kept).sum() / (active > 0).sum()
    assert 0.4 < dropped.item() < 0.6


@pytest.mark.parametrize("pooling", ["cls", "cls_before_pooler", "mean"])
def test_text_tower_folder_loads_in_sentence_transformers_with_its_pooling(tmp_path, tiny_bert, pooling):
    """The checkpoint's ``text/`` folder: SentenceTransformer(path) computes x_t with the
    pooling the tower was trained with (BERT's pooler as a Dense/Tanh module for cls)."""
    from sentence_transformers import SentenceTransformer

    tower = TextTower(tiny_bert, pooling, max_length=16).eval()
    tower.save(tmp_path)
    texts = ["a dog barks loudly", "rain", "an engine idles while birds chirp"]
    with torch.no_grad():
        ours = tower(tower.tokenize(texts)).numpy()
    st = SentenceTransformer(str(tmp_path), device="cpu")
    np.testing.assert_allclose(st.encode(texts), ours, atol=1e-5)
    assert st.max_seq_length == 16
    assert (tmp_path / "2_Dense").is_dir() == (pooling == "cls")


def test_checkpoint_text_folder_equals_the_models_text_backbone(tiny_checkpoint):
    from sentence_transformers import SentenceTransformer

    from clapkit.models.dual import DualEncoder

    model = DualEncoder.load(tiny_checkpoint).eval()
    texts = ["a high rising bell", "a low falling hum"]
    with torch.no_grad():
        ours = model.text_backbone(model.text.tokenize(texts)).numpy()
    theirs = SentenceTransformer(str(tiny_checkpoint / "text"), device="cpu").encode(texts)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_a_tower_registered_in_one_file_trains_by_its_name(tmp_path, tiny_bert, tiny_synthetic):
    """A new tower is one file: its builder registered under a name (here, from this test
    file) is what model.audio.name builds, in the dual encoder and the training loop, with
    its own keyword arguments under model.audio.options; an unknown name lists the names."""
    from conftest import tiny_overrides
    from torch import nn

    from clapkit.config import load_config
    from clapkit.models import towers
    from clapkit.models.dual import DualEncoder
    from clapkit.training.clap import train_clap

    class MeanPool(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.embed_dim, self.proj = width, nn.Linear(1, width)

        def forward(self, wave):
            return self.proj(wave.abs().mean(dim=1, keepdim=True))

    @towers.register_tower("audio", "mean_pool", "a test's own tower")
    def build(settings, sample_rate, **_):
        return MeanPool(settings["options"]["width"])

    try:
        overrides = tiny_overrides(tiny_bert) + ["model.audio.name=mean_pool", "model.audio.options={width: 12}",
                                                 f"data.train=[csv:{tiny_synthetic / 'train.csv'}]", "train.epochs=1"]
        cfg = load_config(None, overrides)
        model = DualEncoder(cfg)
        assert isinstance(model.audio, MeanPool) and model.audio.embed_dim == 12
        summary = train_clap(cfg, tmp_path / "run")
        assert summary["epochs_run"] == 1
        from safetensors.torch import load_file

        reloaded = DualEncoder.load(tmp_path / "run" / "checkpoint")  # rebuilt by name from its config.json
        saved = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
        assert isinstance(reloaded.audio, MeanPool) and torch.equal(reloaded.audio.proj.weight, saved["audio.proj.weight"])
        assert "mean_pool" in [t.name for t in towers.towers("audio")]
    finally:
        towers._TOWERS.pop(("audio", "mean_pool"), None)
    with pytest.raises(ConfigError, match="model.audio.name = 'mean_pool'; choose one of cnn14, small_cnn"):
        build_audio_tower({"name": "mean_pool"}, 8000)
    with pytest.raises(ValueError, match="registered by clapkit.models.towers.audio already"):
        towers.register_tower("audio", "cnn14", "again")(lambda settings, **_: None)
