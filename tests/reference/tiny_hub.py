"""Write a Hugging Face hub cache (``HF_HOME`` layout) of tiny, seeded, random stand-ins for
the four hub repositories the owners' packages load by name, so that their code runs with
``HF_HUB_OFFLINE=1``:

- ``roberta-base``, ``bert-base-uncased`` and ``facebook/bart-base``: laion_clap 1.1.7 loads
  their tokenizers when ``training/data.py`` is imported, and RoBERTa / BERT / BART as its
  text branches (``clap_module/model.py``);
- ``gpt2``: msclap 1.3.4's 2023 text encoder and tokenizer (``bert-base-uncased`` its 2022 one).

The hidden size stays 768, which both packages assume (laion_clap's text projections are
``nn.Linear(768, ...)``; msclap's configs say ``transformer_embed_dim: 768``); depth, width
and vocabulary are tiny. The vocabularies are built from a fixed word list, so the cache is
the same on every run. GPT-2's has ``!`` at id 0, as the real one does (msclap pads with
``!`` and counts the tokens that are not id 0).

Run with the reference environment's Python: ``tiny_hub.py DIR``; then ``HF_HOME=DIR``.
"""

from __future__ import annotations

import json
import string
import sys
import tempfile
from pathlib import Path

REVISION = "0" * 40
WORDS = ("this is a the sound of an and with in on at by song audio music dog rooster pig cow frog cat rain sea "
         "waves crackling fire door wood knock clock tick people crowd playing mandolin bee wasp buzzing marching "
         "waterfall burbling blues classical jazz engine idling siren street car horn children speaking")
CORPUS = [WORDS] * 40 + ["This is a sound of dog.", "this is the sound of sea waves", "This audio is a jazz song."]


def _snapshot(root: Path, repo: str) -> Path:
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    snap = folder / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _byte_bpe(folder: Path, specials: list[str]) -> tuple[Path, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True)
    tok.model.save(str(folder))
    return folder / "vocab.json", folder / "merges.txt"


def main(home: str) -> None:
    import torch
    from transformers import (
        BartConfig,
        BartModel,
        BartTokenizer,
        BertConfig,
        BertModel,
        BertTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2Tokenizer,
        RobertaConfig,
        RobertaModel,
        RobertaTokenizer,
    )

    root = Path(home)
    small = dict(num_attention_heads=12, intermediate_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = _byte_bpe(Path(tmp) / "roberta", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        n = len(json.loads(vocab.read_text()))
        snap = _snapshot(root, "roberta-base")
        RobertaTokenizer(str(vocab), str(merges)).save_pretrained(snap)
        torch.manual_seed(0)
        RobertaModel(RobertaConfig(vocab_size=n, hidden_size=768, num_hidden_layers=1, max_position_embeddings=514,
                                   pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, **small)
                     ).save_pretrained(snap)
        snap = _snapshot(root, "facebook/bart-base")
        BartTokenizer(str(vocab), str(merges)).save_pretrained(snap)
        torch.manual_seed(0)
        BartModel(BartConfig(vocab_size=n, d_model=768, encoder_layers=1, decoder_layers=1, encoder_attention_heads=12,
                             decoder_attention_heads=12, encoder_ffn_dim=64, decoder_ffn_dim=64,
                             max_position_embeddings=512, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                             decoder_start_token_id=2)).save_pretrained(snap)
        vocab, merges = _byte_bpe(Path(tmp) / "gpt2", [])
        table = json.loads(vocab.read_text())
        if table.get("!") != 0:
            raise SystemExit(f"GPT-2's '!' must be id 0 (msclap pads with it); it is {table.get('!')}")
        table["<|endoftext|>"] = len(table)
        vocab.write_text(json.dumps(table))
        snap = _snapshot(root, "gpt2")
        GPT2Tokenizer(str(vocab), str(merges)).save_pretrained(snap)
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(vocab_size=len(table), n_embd=768, n_layer=1, n_head=12, n_inner=64, n_positions=128,
                                   bos_token_id=len(table) - 1, eos_token_id=len(table) - 1)).save_pretrained(snap)
        words = sorted(set(" ".join(CORPUS).lower().replace(".", " ").split()))
        chars = list(string.ascii_lowercase + string.digits + string.punctuation)
        pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in string.ascii_lowercase), *words]
        (Path(tmp) / "vocab.txt").write_text("\n".join(dict.fromkeys(pieces)) + "\n")
        snap = _snapshot(root, "bert-base-uncased")
        BertTokenizer(str(Path(tmp) / "vocab.txt"), do_lower_case=True).save_pretrained(snap)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(dict.fromkeys(pieces)), hidden_size=768, num_hidden_layers=1,
                             max_position_embeddings=512, **small)).save_pretrained(snap)
    print(f"tiny hub cache in {root / 'hub'}")


if __name__ == "__main__":
    main(sys.argv[1])
