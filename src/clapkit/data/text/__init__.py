"""Text: sentence corpora, class-name lists, NLI triplets and text-classification files
(:mod:`.corpus`), STS sets (:mod:`.sts`) and SentEval's transfer tasks (:mod:`.senteval`)."""

from .corpus import (
    NLI_COLUMNS,
    TextClassificationSet,
    Triplet,
    load_corpus,
    load_label_names,
    load_nli,
    load_text_classification,
    nli_jsonl_triplets,
)
from .sts import SENTEVAL_SETS, SENTEVAL_YEARS, StsSet, load_sts, load_stsb

__all__ = ["NLI_COLUMNS", "SENTEVAL_SETS", "SENTEVAL_YEARS", "StsSet", "TextClassificationSet", "Triplet", "load_corpus",
           "load_label_names", "load_nli", "load_sts", "load_stsb", "load_text_classification", "nli_jsonl_triplets"]
