"""SentEval's transfer tasks read from SentEval's own ``data/downstream`` layout.

==========  ===========================================  ==========================
task        files (in DIR/TASK/)                         protocol
==========  ===========================================  ==========================
MR          ``rt-polarity.pos``, ``rt-polarity.neg``      10-fold, C by inner CV
CR          ``custrev.pos``, ``custrev.neg``              10-fold, C by inner CV
SUBJ        ``subj.subjective``, ``subj.objective``      10-fold, C by inner CV
MPQA        ``mpqa.pos``, ``mpqa.neg``                    10-fold, C by inner CV
SST2        ``SST/binary/sentiment-{train,dev,test}``    C by dev, test
TREC        ``train_5500.label``, ``TREC_10.label``       C by CV on train, test
MRPC        ``msr_paraphrase_{train,test}.txt``           C by CV on train, test
==========  ===========================================  ==========================

Read as SentEval reads them (``senteval/binary.py``, ``sst.py``, ``trec.py``, ``mrpc.py``):

- the binary files one sentence a line, Latin-1, every line an item: an empty line is an
  empty sentence, as SentEval keeps it (its CR and MPQA files hold a few, which is why
  SentEval counts 3,775 CR and 10,606 MPQA items). Label 1 for ``pos``, and for SUBJ's
  *objective* file (SentEval passes ``subj.objective`` as its positive class);
- SST2 ``sentence<TAB>label`` lines (UTF-8), TREC ``LABEL:sub sentence`` lines (Latin-1;
  the six coarse labels), MRPC's tab-separated files after their header (``Quality``,
  ``#1 String``, ``#2 String``; UTF-8, a BOM is fine);
- sentences split on whitespace and the words rejoined with single spaces (SentEval
  splits them into words; SimCSE's and sentence-transformers' batchers join them);
- items sorted as SentEval sorts them before embedding, stably: by (number of words,
  label), MRPC by (words of sentence 1, words of sentence 2, label). SentEval's k-fold
  assignment follows that order, so the same seed gives SentEval's folds.

A task whose folder is absent is left out; a present task missing a file, or a line
that does not parse, is an error naming the file and line (``skip_bad``: skipped and
counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError
from ..files import Skipped

# (label 1 file, label 0 file), in SentEval's order (pos + neg before sorting)
BINARY = {"MR": ("rt-polarity.pos", "rt-polarity.neg"), "CR": ("custrev.pos", "custrev.neg"),
          "SUBJ": ("subj.objective", "subj.subjective"), "MPQA": ("mpqa.pos", "mpqa.neg")}
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")


@dataclass
class TransferTask:
    """``protocol``: ``cv`` (k-fold over ``splits['all']``), ``split`` (train/dev/test) or
    ``kfold`` (C by CV on train, then test). A split is (texts, labels); MRPC's texts
    are (sentence 1, sentence 2) pairs."""

    name: str
    protocol: str
    splits: dict[str, tuple[list, list[int]]] = field(default_factory=dict)
    pairs: bool = False

    def size(self) -> int:
        return sum(len(y) for _, y in self.splits.values())


def _words(text: str) -> str:
    return " ".join(text.split())


def _count(text: str) -> int:
    return len(text.split())


def _sorted(texts: list, labels: list[int], pairs: bool = False) -> tuple[list, list[int]]:
    """SentEval's order: a stable sort by (words, label), or (words of each sentence, label)."""
    def key(i):
        t = texts[i]
        return (_count(t[0]), _count(t[1]), labels[i]) if pairs else (_count(t), labels[i])

    order = sorted(range(len(texts)), key=key)
    return [texts[i] for i in order], [labels[i] for i in order]


def _lines(path: Path, encoding: str) -> list[str]:
    if not path.is_file():
        raise DataError("missing: SentEval's layout has this file here (data/downstream from its get_transfer_data.bash)",
                        str(path))
    return path.read_bytes().decode(encoding).splitlines()


def _binary(folder: Path, name: str, c: _Bad) -> TransferTask:
    texts, labels = [], []
    for label, fname in zip((1, 0), BINARY[name], strict=True):
        for line in _lines(folder / fname, "latin-1"):  # every line an item, an empty one too
            texts.append(_words(line))
            labels.append(label)
    return TransferTask(name, "cv", {"all": _sorted(texts, labels)})


def _sst2(folder: Path, c: _Bad) -> TransferTask:
    task = TransferTask("SST2", "split")
    for split in ("train", "dev", "test"):
        path = folder / f"sentiment-{split}"
        texts, labels = [], []
        for n, line in enumerate(_lines(path, "utf-8-sig"), 1):
            if not line.strip():
                continue
            text, tab, label = line.strip().rpartition("\t")
            if not tab or label not in ("0", "1") or not text.strip():
                c.bad(DataError("expected 'sentence<TAB>0|1'", f"{path} line {n}", reason="bad SST2 line"))
                continue
            texts.append(_words(text))
            labels.append(int(label))
        task.splits[split] = _sorted(texts, labels)
    return task


def _trec(folder: Path, c: _Bad) -> TransferTask:
    task = TransferTask("TREC", "kfold")
    for split, fname in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        path = folder / fname
        texts, labels = [], []
        for n, line in enumerate(_lines(path, "latin-1"), 1):
            if not line.strip():
                continue
            label, colon, rest = line.strip().partition(":")
            sub, space, text = rest.partition(" ")
            if not colon or label not in TREC_LABELS or not space or not text.strip():
                c.bad(DataError(f"expected 'LABEL:sub question' with LABEL one of {', '.join(TREC_LABELS)}",
                                f"{path} line {n}", reason="bad TREC line"))
                continue
            texts.append(_words(text))
            labels.append(TREC_LABELS.index(label))
        task.splits[split] = _sorted(texts, labels)
    return task


def _mrpc(folder: Path, c: _Bad) -> TransferTask:
    task = TransferTask("MRPC", "kfold", pairs=True)
    for split in ("train", "test"):
        path = folder / f"msr_paraphrase_{split}.txt"
        lines = _lines(path, "utf-8-sig")
        header = lines[0].split("\t") if lines else []
        if len(header) < 5 or header[0] != "Quality":
            raise DataError("expected the header 'Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String'",
                            f"{path} line 1")
        texts, labels = [], []
        for n, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 5 or cols[0].strip() not in ("0", "1") or not cols[3].strip() or not cols[4].strip():
                c.bad(DataError("expected 5 tab-separated columns: 0|1, two ids, two sentences", f"{path} line {n}",
                                reason="bad MRPC line"))
                continue
            texts.append((_words(cols[3]), _words(cols[4])))
            labels.append(int(cols[0]))
        task.splits[split] = _sorted(texts, labels, pairs=True)
    return task


class _Bad:
    def __init__(self, skip_bad: bool, skipped: Skipped):
        self.skip_bad, self.skipped = skip_bad, skipped

    def bad(self, exc: DataError) -> None:
        if not self.skip_bad:
            raise exc
        self.skipped.add(exc)


def load_senteval(root: str | Path, skip_bad: bool = False, skipped: Skipped | None = None,
                  tasks: tuple[str, ...] = TASKS) -> list[TransferTask]:
    """The transfer tasks under SentEval's ``data/downstream`` folder ``root``, in
    SentEval's order; tasks whose folder is absent are left out."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("folder not found (give SentEval's data/downstream)", str(root))
    c = _Bad(skip_bad, skipped if skipped is not None else Skipped())
    out = []
    for name in tasks:
        if name in BINARY and (root / name).is_dir():
            out.append(_binary(root / name, name, c))
        elif name == "SST2" and (root / "SST" / "binary").is_dir():
            out.append(_sst2(root / "SST" / "binary", c))
        elif name == "TREC" and (root / "TREC").is_dir():
            out.append(_trec(root / "TREC", c))
        elif name == "MRPC" and (root / "MRPC").is_dir():
            out.append(_mrpc(root / "MRPC", c))
    if not out:
        raise DataError(f"none of SentEval's task folders ({', '.join(sorted(BINARY))}, SST/binary, TREC, MRPC)", str(root))
    return out
