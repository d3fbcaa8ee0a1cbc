"""The image half: decoding, the seeded pipeline, image-caption and labelled formats in
their owners' layouts, image towers, CyCLIP, and CLIP training end to end."""

import io
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import tiny_image_overrides, train_clap_stopped_then_resumed
from PIL import Image
from safetensors.torch import load_file

from clapkit.config import load_config
from clapkit.data.audio.labelled import load_labelled
from clapkit.data.files import Skipped, TarMember
from clapkit.data.image.captions import load_image_pairs
from clapkit.data.image.io import check_images, open_image, random_resized_crop_box
from clapkit.data.image.labelled import load_labelled_images
from clapkit.data.image_datasets import ImageDataset
from clapkit.data.media import load_labelled_media
from clapkit.data.shards import expand_shards, write_tar
from clapkit.errors import ConfigError, DataError
from clapkit.losses import clip_loss, cyclip_regularisers
from clapkit.models.dual import DualEncoder
from clapkit.training.clap import ClapTrainer, build_optimizer, train_clap, warmup_cosine

SETTINGS = {"size": 8, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "crop_scale": [0.3, 1.0], "flip_p": 0.5}


def _png(path, size=(12, 10), colour=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


# --- decoding ------------------------------------------------------------------------

def test_decoding_modes_exif_and_gif(tmp_path):
    # RGBA: transparent pixels over white, opaque ones kept
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.save(tmp_path / "a.png")
    x = np.asarray(open_image(tmp_path / "a.png"))
    assert x.shape == (4, 4, 3) and x[0, 0].tolist() == [10, 20, 30] and x[3, 3].tolist() == [255, 255, 255]
    # grayscale and palette to RGB
    Image.new("L", (3, 2), 77).save(tmp_path / "g.png")
    assert np.asarray(open_image(tmp_path / "g.png"))[1, 2].tolist() == [77, 77, 77]
    Image.new("RGB", (3, 3), (0, 0, 255)).convert("P").save(tmp_path / "p.png")
    assert np.asarray(open_image(tmp_path / "p.png"))[0, 0].tolist() == [0, 0, 255]
    # EXIF orientation 6 (rotate 90 clockwise to display): a 4 x 2 file shows as 2 x 4
    im = Image.new("RGB", (4, 2), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "e.jpg", exif=exif)
    assert open_image(tmp_path / "e.jpg").size == (2, 4)
    # GIF: the first frame
    frames = [Image.new("P", (2, 2), i) for i in (1, 2)]
    frames[0].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    frames[0].save(tmp_path / "f.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(open_image(tmp_path / "f.gif"))[0, 0].tolist() == [255, 0, 0]
    # WebP
    Image.new("RGB", (5, 5), (9, 200, 9)).save(tmp_path / "w.webp", lossless=True)
    assert np.asarray(open_image(tmp_path / "w.webp"))[2, 2].tolist() == [9, 200, 9]


def test_bad_images_name_the_file_then_skip_and_count(tmp_path):
    good = _png(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "zero.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0))
                                        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))  # 0 x 5 pixels
    for name in ("empty.png", "text.jpg", "cut.jpg", "missing.png", "zero.png"):
        with pytest.raises(DataError, match=name):
            open_image(tmp_path / name)

    class Item:
        def __init__(self, media, where):
            self.media, self.where = media, where

    items = [Item(good, "m.csv line 2"), Item(tmp_path / "cut.jpg", "m.csv line 3"), Item(tmp_path / "missing.png", "m.csv line 4")]
    with pytest.raises(DataError, match=r"m.csv line 3: .*cut.jpg: cannot decode image.*2 bad image"):
        check_images(items, False, Skipped())
    skipped = Skipped()
    assert [i.media for i in check_images(items, True, skipped)] == [good]
    assert skipped.count == 2 and skipped.reasons == {"unreadable image": 1, "image file not found": 1}


# --- the pipeline ----------------------------------------------------------------------

def test_eval_transform_resizes_the_shorter_side_and_centre_crops(tmp_path):
    # 16 x 8 picture: left half black, right half white; shorter side 8 -> 16 x 8, crop the middle 8
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:, 8:] = 255
    Image.fromarray(arr).save(tmp_path / "x.png")

    class Item:
        media, where = tmp_path / "x.png", "row"

    x = ImageDataset([Item()], SETTINGS, train=False)[0][0]
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[:, :, :3], torch.zeros(3, 8, 3), atol=0.02)
    assert torch.allclose(x[:, :, 5:], torch.ones(3, 8, 3), atol=0.02)
    norm = ImageDataset([Item()], SETTINGS | {"mean": [0.5] * 3, "std": [0.25] * 3}, train=False)[0][0]
    torch.testing.assert_close(norm, (x - 0.5) / 0.25)


def test_training_draws_are_seeded_by_seed_epoch_item_and_equal_in_workers(tmp_path):
    from torch.utils.data import DataLoader

    from clapkit.data.datasets import EpochBatches, batch_loader, collate_clips

    rng = np.random.default_rng(0)

    class Item:
        def __init__(self, media):
            self.media, self.where = media, str(media)

    items = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append(Item(tmp_path / f"{i}.png"))
    ds = ImageDataset(items, SETTINGS, train=True, seed=3)
    a, b = ds[(0, 2)][0], ImageDataset(items, SETTINGS, train=True, seed=3)[(0, 2)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds[(1, 2)][0]) and not torch.equal(a, ImageDataset(items, SETTINGS, True, seed=4)[(0, 2)][0])
    sampler = EpochBatches()
    sampler.set(5, [[0, 1, 2], [3, 4, 5]])
    loader = batch_loader(ds, sampler, 2, collate_fn=collate_clips)
    for (x, idx), want in zip(loader, ([0, 1, 2], [3, 4, 5]), strict=True):
        assert idx.tolist() == want and torch.equal(x, torch.stack([ds[(5, i)][0] for i in want]))
    assert isinstance(loader, DataLoader)
    # the crop box follows torchvision's rule: area in scale, inside the image
    for seed in range(50):
        left, top, right, bottom = random_resized_crop_box(30, 20, (0.3, 1.0), np.random.default_rng(seed))
        assert 0 <= left < right <= 30 and 0 <= top < bottom <= 20


# --- image-caption formats -----------------------------------------------------------

def test_coco_captions_json(tmp_path):
    _png(tmp_path / "val2017" / "000000000139.jpg")
    _png(tmp_path / "val2017" / "000000000285.jpg")
    (tmp_path / "annotations").mkdir()
    coco = {"info": {}, "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 10, "width": 12},
                                   {"id": 285, "file_name": "000000000285.jpg"}],
            "annotations": [{"image_id": 139, "id": 1, "caption": "A woman stands in the kitchen."},
                            {"image_id": 285, "id": 2, "caption": "A big brown bear."},
                            {"image_id": 139, "id": 3, "caption": " A room with a table. "}]}
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps(coco))
    pairs = load_image_pairs(f"coco:{path}")  # images found in ROOT/val2017 by default
    assert [(p.media.name, p.caption, p.media_id) for p in pairs] == [
        ("000000000139.jpg", "A woman stands in the kitchen.", "139"), ("000000000285.jpg", "A big brown bear.", "285"),
        ("000000000139.jpg", "A room with a table.", "139")]
    coco["annotations"].append({"image_id": 999, "caption": "x"})
    coco["annotations"].append({"image_id": 285, "caption": ""})
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"captions_val2017.json annotations\[3\] \(image_id 999\): image_id not among"):
        load_image_pairs(f"coco:{path}")
    skipped = Skipped()
    assert len(load_image_pairs(f"coco:{path}", skip_bad=True, skipped=skipped)) == 3 and skipped.count == 2
    path.write_text('{"images": [')
    with pytest.raises(DataError, match=r"captions_val2017.json: not valid JSON"):
        load_image_pairs(f"coco:{path}")


def test_karpathy_split_json_and_flickr_token_files(tmp_path):
    for name in ("1000092795.jpg", "10002456.jpg", "1000268201.jpg"):
        _png(tmp_path / "flickr30k-images" / name)
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "train",
         "sentences": [{"raw": "Two young guys with shaggy hair.", "tokens": []}, {"raw": "Two men outside.", "tokens": []}]},
        {"filename": "10002456.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": "Workers on a roof."}]},
        {"filename": "1000268201.jpg", "imgid": 2, "split": "restval", "sentences": [{"raw": "A child in pink."}]}]}
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(data))
    assert len(load_image_pairs(f"karpathy:{path}")) == 4
    assert [p.caption for p in load_image_pairs(f"karpathy:{path}", split="test")] == ["Workers on a roof."]
    assert [p.caption for p in load_image_pairs(f"karpathy:{path}", split="train")] == [
        "Two young guys with shaggy hair.", "Two men outside.", "A child in pink."]  # restval is train
    token = tmp_path / "results_20130124.token"
    token.write_text("1000092795.jpg#0\tTwo young guys with shaggy hair .\n1000092795.jpg#1\tTwo men outside .\n"
                     "10002456.jpg#0\tWorkers on a roof .\n")
    pairs = load_image_pairs(f"flickr:{token}")
    assert [(p.media.name, p.caption) for p in pairs][1] == ("1000092795.jpg", "Two men outside .")
    assert len({p.media for p in pairs}) == 2
    token.write_text("1000092795.jpg#0\tok .\nbroken line without a tab\nmissing.jpg#0\tnot here .\n")
    with pytest.raises(DataError, match=r"results_20130124.token line 2: expected IMAGE#N<TAB>caption"):
        load_image_pairs(f"flickr:{token}")
    skipped = Skipped()
    assert len(load_image_pairs(f"flickr:{token}", skip_bad=True, skipped=skipped)) == 1
    assert skipped.reasons == {"malformed line": 1, "image file not found": 1}


def test_csv_jsonl_with_selectable_columns(tmp_path):
    _png(tmp_path / "img" / "a.png")
    (tmp_path / "m.csv").write_text("picture,text\nimg/a.png,a red box\nimg/b.png,missing\n")
    with pytest.raises(DataError, match=r"m.csv line 3: image file not found"):
        load_image_pairs(f"csv:{tmp_path / 'm.csv'}", image_column="picture", caption_column="text")
    pairs = load_image_pairs(f"csv:{tmp_path / 'm.csv'}", image_column="picture", caption_column="text", skip_bad=True)
    assert [(p.media, p.caption) for p in pairs] == [(tmp_path / "img" / "a.png", "a red box")]
    (tmp_path / "m.jsonl").write_text('{"image": "img/a.png", "caption": ["one", "two"]}\n{"image": 3}\n')
    with pytest.raises(DataError, match=r"m.jsonl line 2"):
        load_image_pairs(f"jsonl:{tmp_path / 'm.jsonl'}")
    assert [p.caption for p in load_image_pairs(f"jsonl:{tmp_path / 'm.jsonl'}", skip_bad=True)] == ["one", "two"]




def test_webdataset_shards_are_indexed_and_read_in_place(tmp_path):
    def png_bytes(colour):
        buf = io.BytesIO()
        Image.new("RGB", (6, 6), colour).save(buf, "PNG")
        return buf.getvalue()

    write_tar(tmp_path / "s-000.tar", [("000001.jpg", png_bytes((255, 0, 0))), ("000001.txt", b"a red square"),
                                    ("000002.png", png_bytes((0, 0, 255))), ("000002.txt", b"a blue square"),
                                    ("000002.json", b"{}")])
    write_tar(tmp_path / "s-001.tar", [("sub/000003.webp", png_bytes((0, 255, 0))), ("sub/000003.txt", b"green"),
                                    ("000004.txt", b"no image")])
    assert expand_shards(str(tmp_path / "s-{000..001}.tar")) == [tmp_path / "s-000.tar", tmp_path / "s-001.tar"]
    with pytest.raises(DataError, match=r"s-001.tar sample 000004: needs an image"):
        load_image_pairs(f"wds:{tmp_path}/s-{{000..001}}.tar")
    skipped = Skipped()
    pairs = load_image_pairs(f"wds:{tmp_path}/s-*.tar", skip_bad=True, skipped=skipped)
    assert [p.caption for p in pairs] == ["a red square", "a blue square", "green"] and skipped.count == 1
    assert all(isinstance(p.media, TarMember) for p in pairs) and not (tmp_path / "000001.jpg").exists()
    assert np.asarray(open_image(pairs[1].media))[0, 0].tolist() == [0, 0, 255]
    assert str(pairs[2].media).endswith("s-001.tar#sub/000003.webp")


# --- labelled image sets ---------------------------------------------------------------

def test_labelled_folder_csv_and_cifar(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _png(tmp_path / "inet" / cls / f"{i}.JPEG", colour=(i, 0, 0))
    s = load_labelled_media(f"folder:{tmp_path / 'inet'}", "image")
    assert s.class_names == ["cat", "dog"] and [c.label for c in s.clips] == [0, 0, 1, 1]
    (tmp_path / "labels.csv").write_text("image,label\ninet/cat/0.JPEG,tabby\ninet/dog/1.JPEG,corgi\n,x\n")
    with pytest.raises(DataError, match=r"labels.csv line 4: empty image or label"):
        load_labelled_images(f"csv:{tmp_path / 'labels.csv'}")
    s = load_labelled_images(f"csv:{tmp_path / 'labels.csv'}", skip_bad=True)
    assert s.class_names == ["corgi", "tabby"] and [c.label for c in s.clips] == [1, 0] and s.skipped.count == 1
    # CIFAR-10 and CIFAR-100 python batches
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 256
    pickle.dump({b"label_names": [b"airplane", b"automobile"]}, open(c10 / "batches.meta", "wb"))
    pickle.dump({b"data": data.astype(np.uint8), b"labels": [1, 0]}, open(c10 / "test_batch", "wb"))
    s = load_labelled_media(f"cifar:{tmp_path}", "image")
    assert s.class_names == ["airplane", "automobile"] and [c.label for c in s.clips] == [1, 0]
    pixel = np.asarray(open_image(s.clips[0].media))
    assert pixel.shape == (32, 32, 3) and pixel[0, 1].tolist() == [1, 1025 % 256, 2049 % 256] and pixel[1, 0].tolist() == [32, 1056 % 256, 2080 % 256]
    c100 = tmp_path / "c100"
    c100.mkdir()
    pickle.dump({b"fine_label_names": [b"apple", b"bee", b"cup"], b"coarse_label_names": []}, open(c100 / "meta", "wb"))
    pickle.dump({b"data": data.astype(np.uint8), b"fine_labels": [2, 1], b"coarse_labels": [0, 0]}, open(c100 / "test", "wb"))
    assert [c.label for c in load_labelled_images(f"cifar:{c100}").clips] == [2, 1]
    (c100 / "test").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"c100/test: not a CIFAR python batch"):
        load_labelled_images(f"cifar:{c100}")


def test_shared_emoji_and_mnist(shared_data):
    labels = f"csv:{shared_data / 'images' / 'emoji' / 'labels.csv'}"
    emoji = load_labelled_media(labels, "image")
    assert len(emoji.clips) == 1911 and len(emoji.class_names) == 99
    two = load_labelled_media(labels, "image", classes=["food-fruit", "animal-mammal"])
    assert two.class_names == ["animal-mammal", "food-fruit"] and len(two.clips) == 66 + sum(
        c.label == emoji.class_names.index("food-fruit") for c in emoji.clips)
    pairs = load_image_pairs(f"csv:{shared_data / 'images' / 'emoji' / 'pairs.csv'}")
    assert len(pairs) == 1911 and pairs[0].caption == "hash key"
    x = np.asarray(open_image(pairs[0].media))
    assert x.shape == (64, 64, 3)
    mnist = load_labelled_media(f"mnist:{shared_data / 'images' / 'mnist'}", "image")
    assert len(mnist.clips) == 10000 and mnist.clips[0].label == 7
    assert np.asarray(open_image(mnist.clips[0].media)).shape == (28, 28, 3)


# --- losses, optimizer, schedule --------------------------------------------------------

def test_cyclip_terms_equal_a_loop_reference_values_and_gradients():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1).requires_grad_()
    in_modal, cross = cyclip_regularisers(a, t)
    n = 5
    ref_in = sum((a[j] @ a[k] - t[j] @ t[k]) ** 2 for j in range(n) for k in range(n)) / n
    ref_cross = sum((a[j] @ t[k] - a[k] @ t[j]) ** 2 for j in range(n) for k in range(n)) / n
    assert in_modal.item() == pytest.approx(ref_in.item(), rel=1e-12)
    assert cross.item() == pytest.approx(ref_cross.item(), rel=1e-12)
    g = torch.autograd.grad(0.25 * in_modal + 0.7 * cross, (a, t))
    g_ref = torch.autograd.grad(0.25 * ref_in + 0.7 * ref_cross, (a, t))
    for x, y in zip(g, g_ref, strict=True):
        torch.testing.assert_close(x, y)
    # identical towers: both terms vanish
    assert [v.item() for v in cyclip_regularisers(a.detach(), a.detach())] == pytest.approx([0.0, 0.0], abs=1e-24)


def test_trainer_loss_is_clip_plus_weighted_cyclip_and_clip_at_zero_weights(tmp_path, tiny_bert, tiny_images):
    base = tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]"]
    trainer = ClapTrainer(load_config(None, base + ["train.cyclip.in_modal=0.3", "train.cyclip.cross_modal=0.5"]), tmp_path / "a")
    trainer._start_phase("unfrozen")
    trainer.model.eval()
    idx = list(range(8))
    inputs = trainer._inputs("train", idx)
    with torch.no_grad():
        e_m, e_t, s = trainer.model(**inputs)
        in_modal, cross = cyclip_regularisers(e_m, e_t)
        want = clip_loss(e_m, e_t, s, trainer.model.logit_clamp) + 0.3 * in_modal + 0.5 * cross
        assert trainer._loss(**inputs).item() == pytest.approx(want.item(), rel=1e-6)
        trainer.cfg["train"]["cyclip"] = {"in_modal": 0.0, "cross_modal": 0.0}
        assert trainer._loss(**inputs).item() == clip_loss(e_m, e_t, s, trainer.model.logit_clamp).item()


def test_weight_decay_skips_biases_norms_and_temperature_and_cosine_schedule(tiny_bert):
    cfg = load_config("clip-cpu", tiny_image_overrides(tiny_bert) + ["train.weight_decay=0.2", "train.optimizer=adamw"])
    model = DualEncoder(cfg)
    opt = build_optimizer(model, cfg["train"], 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.2 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "logit_scale" not in names and not any(n.endswith(".bias") for n in names)
    assert "image.features.0.weight" in names and "image.features.1.weight" not in names  # conv kernel vs BatchNorm scale
    sched = warmup_cosine(opt, warmup=4, total=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3) and lrs[9] == pytest.approx(0.5e-3 * (1 + np.cos(np.pi * 5 / 10)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# --- towers ----------------------------------------------------------------------------

def _tiny_vit(folder, two_tower=False):
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    if two_tower:
        cfg = CLIPConfig(text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "intermediate_size": 32, "vocab_size": 99},
                         vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "intermediate_size": 32, "image_size": 16, "patch_size": 8}, projection_dim=8)
        CLIPModel(cfg).save_pretrained(folder)
    else:
        ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           image_size=16, patch_size=8)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 16, "width": 16}, "image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2]}))
    return folder


@pytest.mark.parametrize("two_tower", [False, True])
def test_hf_vision_tower_reads_its_processor_trains_and_round_trips(tmp_path, tiny_bert, tiny_images, two_tower):
    vit = _tiny_vit(tmp_path / "vit", two_tower)
    over = [o for o in tiny_image_overrides(tiny_bert) if not o.startswith(("image.size", "image.mean", "image.std"))]
    cfg = load_config(None, over + [f"model.image.name={vit}", f"data.train=[csv:{tiny_images / 'train.csv'}]",
                                    "train.epochs=1", "model.image.pooling=cls"])
    s = train_clap(cfg, tmp_path / "run")
    assert s["train_images"] > 0 and s["modality"] == "image"
    model = DualEncoder.load(tmp_path / "run" / "checkpoint")
    assert model.cfg["image"]["size"] == 16 and model.cfg["image"]["mean"] == [0.4] * 3
    assert (tmp_path / "run" / "checkpoint" / "vision" / "config.json").is_file()
    weights = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    assert any(k.startswith("image.model.") for k in weights)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    from clapkit.models.towers.image import HFVisionTower

    fresh = HFVisionTower(str(vit), "cls").eval()
    with torch.no_grad():  # the trained tower differs from its source, and reloads to itself
        assert not torch.allclose(model.media_backbone(x), fresh(x))
        again = DualEncoder.load(tmp_path / "run" / "checkpoint").eval()
        torch.testing.assert_close(again.media_backbone(x), model.media_backbone(x))


def test_small_vit_and_unknown_tower_names(tiny_bert):
    cfg = load_config(None, tiny_image_overrides(tiny_bert) + ["model.image.name=small_vit", "model.image.patch=8",
                                                               "model.image.width=16", "model.image.heads=2", "model.image.depth=1"])
    model = DualEncoder(cfg)
    assert model.media_backbone(torch.randn(3, 3, 32, 32)).shape == (3, 16)
    with pytest.raises(ConfigError, match=r"model.image.patch = 5 must divide image.size = 32"):
        DualEncoder(load_config(None, tiny_image_overrides(tiny_bert) + ["model.image.name=small_vit", "model.image.patch=5"]))
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        DualEncoder(load_config(None, tiny_image_overrides(tiny_bert) + ["model.image.name=/no/such/vit"]))
    with pytest.raises(ConfigError, match="unknown tower 'audio' for a image model"):
        model.freeze_backbones(["audio"])


# --- training end to end -----------------------------------------------------------------

def test_tiny_clip_training_lowers_validation_loss_and_resumes_exactly(tmp_path, tiny_bert, tiny_images, monkeypatch):
    """4 epochs straight == 4 epochs stopped by a crash in epoch 3, then resumed (cosine
    schedule, AdamW, CyCLIP, random crops and flips)."""
    base = tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]", "train.schedule=cosine",
                                              "train.optimizer=adamw", "train.weight_decay=0.1", "train.warmup_steps=2",
                                              "train.cyclip.in_modal=0.25", "train.cyclip.cross_modal=0.25"]
    s = train_clap(load_config(None, base + ["train.epochs=4"]), tmp_path / "straight")
    import csv

    with open(tmp_path / "straight" / "metrics.csv") as fh:
        val = [float(r["val_loss"]) for r in csv.DictReader(fh)]
    assert val[-1] < val[0] and s["train_images"] > 0 and s["val_pairs"] > 0
    train_clap_stopped_then_resumed(load_config(None, base + ["train.epochs=4"]), tmp_path / "resumed", 2, monkeypatch)
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("image.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_frozen_image_tower_cache_gives_the_same_losses_as_no_cache(tmp_path, tiny_bert, tiny_images):
    """Both towers frozen, their outputs cached once: the losses of running them every
    step (full-picture crops, no flips: every epoch sees the cached picture)."""
    base = tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]", "train.epochs=2",
                                              "train.frozen_epochs=2", "model.projector.dropout=0", "train.lr_frozen=3e-3",
                                              "image.crop_scale=[1.0, 1.0]", "image.flip_p=0"]
    train_clap(load_config(None, base + ["train.cache_frozen=true"]), tmp_path / "c")
    train_clap(load_config(None, base + ["train.cache_frozen=false"]), tmp_path / "n")
    import csv

    def val(run):
        with open(run / "metrics.csv") as fh:
            return [float(r["val_loss"]) for r in csv.DictReader(fh)]

    assert val(tmp_path / "c") == pytest.approx(val(tmp_path / "n"), abs=1e-5)


def test_audio_checkpoint_written_before_images_loads_and_evaluates_unchanged(tmp_path, tiny_checkpoint, tiny_synthetic):
    import shutil

    from clapkit.evaluation.zeroshot import zeroshot_eval

    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    cfg = json.loads((old / "config.json").read_text())
    for section, key in (("model", "modality"), ("model", "image"), ("train", "cyclip"), ("train", "schedule"),
                         ("train", "optimizer"), ("data", "image_column"), ("data", "image_dir"), ("data", "split")):
        cfg[section].pop(key)
    cfg.pop("image")
    cfg["train"]["frozen_backbones"] = ["audio", "text"]
    (old / "config.json").write_text(json.dumps(cfg))
    unseen = load_labelled(f"folder:{tiny_synthetic / 'unseen'}")
    a = zeroshot_eval(DualEncoder.load(old), unseen)
    b = zeroshot_eval(DualEncoder.load(tiny_checkpoint), unseen)
    assert DualEncoder.load(old).medium == "audio" and a["confusion"] == b["confusion"] and a["top1"] == b["top1"]


def test_train_clip_cli_on_the_shared_emoji_then_zeroshot_and_retrieval(tmp_path, shared_data, tiny_bert):
    from typer.testing import CliRunner

    from clapkit.cli import app

    emoji = shared_data / "images" / "emoji"
    run = CliRunner().invoke(app, ["train", "clip", "--config", "clip-cpu", "--out", str(tmp_path / "run"),
                                   "--set", f"data.train=[csv:{emoji / 'pairs.csv'}]", "--set", "train.epochs=1",
                                   "--set", "train.frozen_epochs=1", "--set", f"model.text.name={tiny_bert}",
                                   "--set", "image.size=32", "--set", "model.image.channels=[8, 16]",
                                   "--set", "runtime.progress=false"])
    assert run.exit_code == 0, run.output
    assert "1 epochs on 1720 pairs of 1720 images (191 validation)" in run.output
    ckpt = tmp_path / "run" / "checkpoint"
    run = CliRunner().invoke(app, ["eval", "zeroshot", "--model", str(ckpt), "--data", f"csv:{emoji / 'labels.csv'}",
                                   "--out", str(tmp_path / "zs.json")])
    assert run.exit_code == 0, run.output
    zs = json.loads((tmp_path / "zs.json").read_text())
    assert zs["clips"] == 1911 and zs["classes"] == 99 and zs["templates"] == ["a photo of a {label}."]
    assert sum(map(sum, zs["confusion"])) == 1911 and (tmp_path / "zs.confusion.png").is_file()
    run = CliRunner().invoke(app, ["eval", "retrieval", "--model", str(ckpt), "--data", f"csv:{emoji / 'pairs.csv'}",
                                   "--out", str(tmp_path / "r.json")])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["images"] == 1911 and r["captions"] == 1911 and r["text_to_image"]["queries"] == 1911
    assert r["image_to_text"]["queries"] == 1911 and 0 <= r["text_to_image"]["R@10"] <= 1


def test_curate_with_an_image_teacher_and_a_soft_label_student(tmp_path, tiny_bert, tiny_images):
    """curate pairs unpaired images with captions through an image teacher; a student
    trains on the manifest with soft labels read from the teacher cache."""
    import csv

    from clapkit.curation import curate

    base = tiny_image_overrides(tiny_bert)
    train_clap(load_config(None, base + [f"data.train=[csv:{tiny_images / 'train.csv'}]", "train.epochs=1"]),
               tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "checkpoint"
    out = tmp_path / "du.csv"
    s = curate(teacher, tiny_images / "unseen", f"csv:{tiny_images / 'train.csv'}", out, sigma=-1.0, top_k=2)
    assert (s["audio_pool"], s["pairs"], s["audio_matched"]) == (16, 32, 16)
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"image", "caption", "similarity", "image_id", "caption_id"} and len(rows) == 32
    cfg = load_config(None, base + [f"data.train=[csv:{out}]", "train.epochs=1", "train.loss=soft_clip",
                                    f"train.soft.teacher={teacher}", f"train.soft.cache={tmp_path / '.clapkit-cache'}",
                                    f"model.init_from={teacher}"])
    summary = train_clap(cfg, tmp_path / "student")
    assert summary["teacher_cache"]["image_computed"] == 0 and summary["teacher_cache"]["text_computed"] == 0
    assert summary["teacher_cache"]["image_reused"] > 0


def test_audit_embeddings_and_embed_take_an_image_checkpoint(tmp_path, tiny_bert, tiny_images):
    from typer.testing import CliRunner

    from clapkit.cli import app

    train_clap(load_config(None, tiny_image_overrides(tiny_bert) + [f"data.train=[csv:{tiny_images / 'train.csv'}]",
                                                                    "train.epochs=1"]), tmp_path / "run")
    ckpt = str(tmp_path / "run" / "checkpoint")
    run = CliRunner().invoke(app, ["audit", "embeddings", "--model", ckpt, "--data", f"folder:{tiny_images / 'seen'}",
                                   "--out", str(tmp_path / "audit"), "--k-max", "3"])
    assert isinstance(run.exception, DataError) and "24 items in 24 classes: the audit needs" in str(run.exception)
    run = CliRunner().invoke(app, ["audit", "embeddings", "--model", ckpt, "--data", f"folder:{tiny_images / 'unseen'}",
                                   "--out", str(tmp_path / "audit"), "--k-max", "3"])
    assert run.exit_code == 0, run.output
    r = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert r["clips"] == 16 and r["classes"] == 8 and r["template"] == "a photo of a {label}."
    assert -1 <= r["silhouette"]["E_a"] <= 1 and (tmp_path / "audit" / "tsne_E_a.png").is_file()
    run = CliRunner().invoke(app, ["embed", "--model", ckpt, "--image", f"csv:{tiny_images / 'test.csv'}",
                                   "--out", str(tmp_path / "e.npz")])
    assert run.exit_code == 0, run.output
    e = np.load(tmp_path / "e.npz")
    assert e["embeddings"].shape == (24, 16) and np.allclose(np.linalg.norm(e["embeddings"], axis=1), 1, atol=1e-5)
    run = CliRunner().invoke(app, ["embed", "--model", ckpt, "--audio", f"csv:{tiny_images / 'test.csv'}",
                                   "--out", str(tmp_path / "x.npz")])
    assert "is an image model; use --image" in str(run.exception)


def test_image_presets_resolve_with_the_published_settings():
    paper = load_config("cyclip-paper")
    t = paper["train"]
    assert paper["model"]["modality"] == "image" and t["cyclip"] == {"in_modal": 0.25, "cross_modal": 0.25}
    # CyCLIP: 128 per GPU on 4 GPUs (the regularisers scale with the global batch), no augmentation
    assert (t["batch_size"], t["lr_unfrozen"], t["weight_decay"], t["warmup_steps"], t["epochs"]) == (512, 5e-4, 0.1, 10000, 64)
    assert paper["image"]["augment"] is False and load_config("clip-paper")["image"]["augment"] is True
    assert (t["optimizer"], t["schedule"], t["frozen_epochs"]) == ("adamw", "cosine", 0)
    assert load_config("clip-paper")["train"]["cyclip"] == {"in_modal": 0.0, "cross_modal": 0.0}
    assert load_config("cyclip")["train"]["cyclip"] == {"in_modal": 0.25, "cross_modal": 0.25}
    assert load_config("clip-cpu")["image"]["size"] == 64
    with pytest.raises(ConfigError, match="train.cyclip.in_modal and cross_modal are weights"):
        load_config("clip-cpu", ["train.cyclip.in_modal=-1"])
    with pytest.raises(ConfigError, match="'model.modality' = 'video'"):
        load_config(None, ["model.modality=video"])


def test_augment_off_trains_on_the_evaluation_transform(tiny_images):
    from clapkit.data.audio.captions import load_pairs
    from clapkit.data.image_datasets import ImageDataset

    pairs = load_pairs(f"csv:{tiny_images / 'train.csv'}", audio_column="image")[:4]
    settings = {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_scale": [0.5, 1.0], "flip_p": 0.5}
    plain = ImageDataset(pairs, settings, train=False)
    off = ImageDataset(pairs, settings | {"augment": False}, train=True, seed=0)
    on = ImageDataset(pairs, settings | {"augment": True}, train=True, seed=0)
    for i in range(4):
        assert torch.equal(off[(3, i)][0], plain[i][0])
    assert any(not torch.equal(on[(3, i)][0], plain[i][0]) for i in range(4))
