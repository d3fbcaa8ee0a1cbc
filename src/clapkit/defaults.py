"""Every config key with its default and a comment on what it does (:data:`DEFAULTS`).

A config is a plain nested dict; presets and ``--set`` override these
(:mod:`clapkit.config`).
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # the layout of a saved config.yaml: 3 since the runtime section (2: the one training loop);
    # a full dump without it was written before, and its missing keys mean what that version
    # did (config.BEFORE_V2); a key of an older layout is read where it lives now (config.MOVED)
    "config_version": 3,
    # the recipe a preset is for (clap, clip, cse, backbone, leakage, improvement, language):
    # `clapkit config` prints the sections it reads (RECIPE_SECTIONS); null: every section
    "recipe": None,
    "seed": 0,
    # How a run runs, shared by every recipe (train clap/clip, train cse, the audio backbone, the
    # experiments); nothing here changes what a run computes except precision. Before
    # config_version 3 these keys lived in train (data.num_workers, data.skip_bad), and
    # `--set train.precision=bf16` still means runtime.precision (config.MOVED)
    "runtime": {
        "device": "auto",  # auto | cpu | cuda | cuda:N
        # fp32 | bf16 | fp16: autocast for the forward (frontends, normalisations and the loss
        # stay fp32); fp16 adds a gradient scaler. bf16 works on CPU as well
        "precision": "fp32",
        "deterministic": True,  # on CUDA: deterministic kernels (see training.common.set_determinism)
        "sync_batchnorm": True,  # under DDP on GPUs: BatchNorm statistics over the global batch
        "num_workers": 0,  # DataLoader workers for training and evaluation data
        "skip_bad": False,  # skip (and count) bad rows and files instead of failing
        "max_bad_steps": 5,  # a non-finite loss or gradient skips the step; this many in a row stop the run
        "save_every_steps": 0,  # also write last/ every N optimisation steps (0: at window ends only)
        "logger": "csv",  # csv | tensorboard
        "progress": True,
        "eval_batch_size": 64,
        # torch.compile of the training forward and of inference: none | default | reduce-overhead
        # (a model that cannot compile runs eager, with a warning; see clapkit.training.compile)
        "compile": "none",
        # under torchrun: ddp (every process holds the whole model) | fsdp (FSDP2's fully_shard: each
        # process holds a shard of every parameter and its optimizer state; see clapkit.training.parallel)
        "parallel": "ddp",
    },
    "data": {
        # Training sources as KIND:PATH specs (csv:, jsonl:, clotho:, audiocaps:, esc50:, folder:).
        "train": [],
        # Validation sources; when empty, `val_fraction` of the training pairs are held out.
        "val": [],
        "audio_dir": None,  # audio folder for clotho:/audiocaps: specs
        "image_dir": None,  # image folder for coco:/karpathy:/flickr: specs (and csv:/jsonl: relative paths)
        "split": None,  # karpathy: keep one split (train, val, test; restval counts as train)
        "audiocaps_pattern": None,  # e.g. "Y{youtube_id}.wav"; None tries common names
        "label_templates": ["This is a sound of {label}."],  # captions for esc50:/folder: sources
        "audio_column": "audio",  # column (csv:) or key (jsonl:) of the audio path
        "image_column": "image",  # column (csv:) or key (jsonl:) of the image path
        "caption_column": "caption",  # column or key of the caption
        "val_fraction": 0.2,
        "val_split_by": "pair",  # pair (as the paper) or media (no clip or image in both splits; "audio" is the same)
        "fraction": 1.0,  # seeded fraction of the training pairs to use
        # stream data.train's wds: shards (train by train.steps, nothing indexed up front;
        # see clapkit.data.stream) instead of indexing every pair into seeded epochs
        "stream": False,
        "shuffle_buffer": 1000,  # stream: pairs in each reader's seeded shuffle buffer
        # pairs of an epoch: all (every caption with its clip or image, the S2 recipe) | one
        # (one caption per clip or image per epoch, drawn with the seed: LAION-CLAP's)
        "captions": "all",
        # no two captions of one clip or image in a batch (each other's false negatives in the CLIP
        # loss): sentence-transformers' NoDuplicatesBatchSampler rule, for epochs and the stream
        "no_duplicate_media": True,
        # audio.crop: variable: the epoch's permutation is sorted by clip length in chunks of this
        # many batches, then cut into batches (clips of similar length, little padding); 1: each
        # batch only sorted (clapkit.training.sources.bucketed_batches)
        "bucket_batches": 16,
    },
    "audio": {
        "sample_rate": 16000,
        "segment_seconds": 5.0,
        "normalize": True,  # per-clip zero mean, unit variance
        # a clip shorter than the segment: zero (zeros after it) | repeatpad (repeated, then zeros:
        # LAION-CLAP's default) | repeat; a public CLAP fine-tuned takes its extractor's own padding
        "pad": "zero",
        # training input: fixed (one seeded segment_seconds crop of every clip) | variable (the whole
        # clip up to max_seconds, a seeded crop of a longer one; batches of clips of similar length,
        # padded with a mask: see clapkit.training.sources.bucketed_batches). Evaluation is unchanged
        "crop": "fixed",
        "max_seconds": 30.0,  # crop: variable: the longest training input
    },
    # Image input (model.modality = image). size/mean/std null: the HF tower's
    # preprocessor_config.json, else 224 and CLIP's mean and std.
    "image": {
        "size": None,
        "mean": None,
        "std": None,
        "augment": True,  # false: training images get the evaluation transform (CyCLIP trains so)
        "crop_scale": [0.9, 1.0],  # training: random resized crop area fraction (open_clip's default)
        "flip_p": 0.0,  # training: horizontal flip probability
    },
    "model": {
        "modality": "audio",  # audio (CLAP) | image (CLIP): the medium of the non-text tower
        "image": {
            # a registered tower (clapkit.models.towers: small_cnn | small_vit | timm:NAME) or a Hugging Face vision
            # model folder or hub name; options: a registered tower's own keyword arguments (any keys)
            "name": "small_cnn",
            "options": {},
            "pooling": "pooled",  # HF towers: pooled (the model's pooled output) | cls (first token)
            "checkpoint": None,  # timm:NAME towers: a local weights file (none: random initialisation)
            "channels": [32, 64, 128, 256],  # small_cnn
            "patch": 8,  # small_vit
            "width": 192,
            "depth": 4,
            "heads": 3,
            "dropout": 0.0,
        },
        "audio": {
            "name": "small_cnn",  # a registered tower (clapkit.models.towers): small_cnn | cnn14 | hf:PATH
            "options": {},  # a registered tower's own keyword arguments (any keys)
            "checkpoint": None,  # path to a PANNs checkpoint (cnn14) or a clapkit audio tower
            "pooling": "auto",  # hf:PATH towers: auto | pooled | mean | first (clapkit.models.towers.hf_audio)
            "n_mels": 64,
            "n_fft": 1024,
            "hop_length": 320,
            "fmin": 50.0,
            "fmax": 14000.0,
            "channels": [16, 32, 64, 128],  # small_cnn only
            "dropout": 0.2,
        },
        "text": {
            "name": "minilm",  # "minilm" (shipped offline), a local path or a hub name
            # the pooled token state: first | mean | auto (a sentence-transformers / train cse folder's own);
            # null: mean. The head after it: none | pooler (the backbone's pretrained one, BERT's tanh) | mlp
            # (a fresh Linear + Tanh); null: none. head_at_eval: an mlp head at evaluation too (null: true)
            "pool": None,
            "head": None,
            "head_at_eval": None,
            # the old single name (cls = first + pooler here; cls_before_pooler = first; mean), mapped
            # on load (clapkit.models.text.resolve_text_head); refused beside a pool/head it contradicts
            "pooling": None,
            "mlp_only_train": None,  # unused here; the old name of cse.model's head-in-training-only
            "max_length": 64,
            "source": None,  # filled in: what the text tower was built from (name, kind, pooling)
        },
        "projector": {"dim": 512, "hidden": 512, "depth": 2, "dropout": 0.1},
        # a clapkit checkpoint to start from (e.g. the teacher; same architecture), or a public
        # CLAP/CLIP in transformers format (folder or hub name), fine-tuned in place and
        # saved back in that format (its own architecture and preprocessing; see HFDualEncoder.for_training)
        "init_from": None,
        "init_temperature": 0.07,
        "learn_temperature": True,
        # clamp the logits to [-c, c] (the CLAP-pitfalls recipe, its `paper` preset); null: off,
        # as in CLIP, open_clip, LAION-CLAP and CyCLIP (which cap the scale: train.max_logit_scale)
        "logit_clamp": None,
    },
    # `clapkit train audio-backbone`: supervised pre-training of the audio tower
    "backbone": {
        "data": None,  # labelled set: esc50:ROOT or folder:DIR
        "include": [],  # class names to train on (empty: all)
        "exclude": [],  # class names to leave out (e.g. the evaluation classes: a "clean" backbone)
        "epochs": 20,
        "lr": 1e-3,
        "batch_size": 64,
        "val_fraction": 0.2,
        "grad_clip": 0.0,  # gradient-norm clip (0: off, as PANNs trains)
    },
    # `clapkit experiment leakage-matrix`: the 2 x 3 grid of the CLAP-pitfalls paper
    "experiment": {
        "synthetic": False,  # True: write and use the embedded synthetic leakage set
        "train_captions": [],  # dirty training caption files (any manifest kind)
        "eval": None,  # labelled evaluation set: esc50:ROOT or folder:DIR
        "pretrain": None,  # labelled set for backbone pre-training (folder:/esc50:)
        "pretrain_exclude": [],  # its classes left out of the clean backbone; empty: those sharing a word with eval
        "pretrain_dirty_checkpoint": None,  # use this as the dirty backbone instead of pre-training one
        "clean_by": "pair",  # pair | audio (see `audit leakage --clean-by`)
        "template": "This is a sound of {label}.",
        # towers to compare instead of the 2 x 3 grid: name -> model.audio settings (e.g. {ast: {name:
        # hf:MIT/ast-finetuned-audioset-10-10-0.4593}, wavlm: {name: hf:microsoft/wavlm-base-plus}}); each is
        # trained on the dirty and the clean captions, and scored with its interval and the named/never-named split
        "towers": {},
    },
    # `clapkit experiment improvement`: teacher -> curation -> students (unpaired improvement)
    "improvement": {
        "synthetic": False,  # True: the embedded synthetic set plus an unpaired audio pool
        "teacher_train": [],  # the teacher's paired data (manifest specs); data.fraction subsamples it
        "audio_pool": None,  # unpaired audio: folder or CSV
        "captions": None,  # caption pool (default: the teacher's training captions)
        "labels": None,  # in-domain labels for DS (esc50:, folder:, txt:)
        "eval": [],  # labelled sets for the zero-shot table
        "sigma": 0.7,
        "top_k": 1,
        "label_threshold": 0.65,
        "student_init": "teacher",  # teacher | fresh
        "student_epochs": 10,
    },
    # `clapkit experiment language-encoder`: S0's study of sentence-embedding training of the
    # text tower inside a CLIP or CLAP (model.modality; train.cyclip for CyCLIP)
    "language": {
        "variants": ["base", "init_unsup", "init_sup", "joint_unsup", "joint_sup"],
        "seeds": [0, 1, 2],
        "synthetic": False,  # True: the embedded synthetic set of model.modality (train/test/unseen)
        "train": [],  # paired training data (manifest specs)
        "zeroshot": None,  # labelled evaluation set (folder:, esc50:, mnist:, ...)
        "retrieval": None,  # evaluation caption pairs: retrieval, uniformity, alignment, modality gap
        "retrieval_dir": None,  # their media folder (clotho:/audiocaps:/coco:/karpathy:); default data.*_dir
        "retrieval_split": None,  # karpathy: their split (default data.split)
        "corpus": None,  # unsupervised SE data (init_unsup via train cse; joint_unsup with se_loss corpus)
        "nli": None,  # supervised SE triplets (init_sup via train cse, joint_sup)
        "sts": [],  # STS sets for the language-encoder quality (the mean Spearman of their table)
        "transfer": [],  # senteval:DIR, task files, {data, text, label, folds} (mean accuracy; eval transfer)
        "se_weight": 0.1,  # lambda of the joint variants
        "joint_unsup_loss": "captions",  # captions | corpus
        "cse_steps": 200,  # train cse steps of the init variants (cse.* holds the rest of its recipe)
        "cse_sup": None,  # init_sup's own recipe: cse.* options over cse, e.g. SimCSE's {batch_size: 512, lr: 5.0e-5}
    },
    # `clapkit train cse`: the text tower as a sentence encoder (SimCSE, VisualCSE, AudioCSE).
    # Device, precision, logger, progress and bad-input skipping come from `runtime`.
    "cse": {
        "mode": "unsup",  # unsup | sup | image | audio (the last two add their loss to `text_loss`)
        "text_loss": "unsup",  # image/audio modes: unsup (corpus) or sup (nli)
        "corpus": None,  # unsup text: txt:FILE (one sentence a line) or stsb:DIR (sts-train sentences)
        "nli": None,  # sup text: CSV with sent0,sent1,hard_neg
        "images": "digits",  # image mode: digits | mnist:DIR | folder:DIR
        "audio": None,  # audio mode: folder:DIR | fsdd:DIR | esc50:ROOT
        "audio_label": "digit",  # fsdd: digit | speaker
        "sts_dev": None,  # stsb:DIR: STS-B dev Spearman every eval_steps, best model kept
        "model": {
            "name": "minilm",  # "minilm" (shipped offline), a local folder or a hub name
            # as model.text: pool first | mean (null: first), head none | pooler | mlp (null: mlp, SimCSE's
            # fresh Linear + Tanh), head_at_eval (null: false: the MLP in training only, SimCSE unsup)
            "pool": None,
            "head": None,
            "head_at_eval": None,
            # the old names: pooling cls = first + mlp here (cls_before_pooler = first; mean), and
            # mlp_only_train = not head_at_eval; mapped on load, refused beside new keys they contradict
            "pooling": None,
            "mlp_only_train": None,
            "max_length": 32,
            "image": {"size": 8, "patch": 2, "channels": 1},
            "audio": {"sample_rate": 16000, "seconds": 1.0, "n_mels": 64, "n_fft": 400, "hop_length": 160,
                      "patch": 16, "stride": 16, "freq_mask": 0, "time_mask": 0},
        },
        "epochs": 1,  # passes over the text data (ignored when `steps` is set)
        "steps": None,  # text steps in all; one image/audio step follows each
        "batch_size": 64,
        "lr": 3e-5,
        "other_batch_size": 48,
        "other_lr": 1e-6,
        "weight": 1.0,  # w in L_text + w * L_other
        "other_loss": "supcon",  # supcon | simclr
        "temperature": 0.05,
        "other_temperature": 0.07,
        "hard_negative_weight": 0.0,  # sup: added to each anchor's own hard-negative logit
        "schedule": "linear",  # linear (decay to 0, as the HF Trainer SimCSE uses) | constant
        "weight_decay": 0.0,
        "grad_clip": 1.0,  # 0 turns it off
        "eval_steps": 125,
        "cache_chunk": 0,  # > 0: gradient caching with chunks of this many rows (large batches)
        "augment": {"scale": [0.5, 1.0], "flip_p": 0.0, "jitter": 0.4, "jitter_p": 0.8, "gray_p": 0.2},
    },
    "train": {
        "batch_size": 128,
        "epochs": 40,  # total, frozen epochs included
        "frozen_epochs": 5,
        "frozen_backbones": ["media", "text"],  # which towers the frozen phase freezes (media: audio or image)
        "keep_frozen": [],  # towers that stay frozen after the frozen phase too
        "lr_frozen": 1e-4,
        "lr_unfrozen": 1e-5,
        "weight_decay": 0.0,  # never on biases, norms or the temperature (every 0-d and 1-d parameter)
        "optimizer": "adam",  # adam | adamw
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "schedule": "plateau",  # plateau (ReduceLROnPlateau on the validation loss) | cosine (warmup, then cosine to 0)
        "warmup_steps": 0,  # cosine: linear warmup steps at the start of each phase
        "grad_clip": 100.0,  # 0 turns it off
        # after every optimizer step the learnt logit scale is capped at this (temperature >= 1/100),
        # as CLIP, open_clip, LAION-CLAP and CyCLIP do; applies to public models fine-tuned too; 0: no cap
        "max_logit_scale": 100.0,
        "steps": 0,  # data.stream: total optimisation steps (train.epochs is then steps / steps_per_epoch)
        "steps_per_epoch": 1000,  # data.stream: steps between validations, epoch checkpoints and log rows
        "plateau_factor": 0.1,
        "plateau_patience": 10,
        "early_stopping_patience": 15,  # epochs without val improvement; 0 turns it off
        "cache_frozen": True,  # cache backbone outputs while the backbones are frozen
        # the objective (clapkit.training.objectives): clip | soft_clip (targets from a teacher's
        # intra-batch similarities) | siglip (pairwise sigmoid, learnt bias) | one registered
        "loss": "clip",
        # validation loss: train (the training objective, CyCLIP's terms included) | clip (plain CLIP,
        # whatever the objective: what clapkit logged before the one loop)
        "val_objective": "train",
        # the metric that picks checkpoint/, drives early stopping and the plateau schedule: auto (CLAP:
        # val_loss; train cse: stsb_dev; audio backbone: val_accuracy) or any logged one, e.g.
        # train_loss, zeroshot_top1, retrieval_r1, stsb_dev (see clapkit.training.monitors)
        "monitor": "auto",
        # evaluation data logged beside the losses every eval_every windows (epochs; train cse: eval_steps):
        # a registered evaluator's name -> its data (clapkit.training.evaluators: zeroshot: SPEC,
        # retrieval: SPEC, sts_dev: stsb:DIR), e.g. {zeroshot: esc50:ESC-50}
        "eval": {},
        "eval_every": 1,
        # gradient caching of the cross-modal loss (GradCache): rows a chunk, one process; 0: off
        "cache_chunk": 0,
        # an exponential moving average of the weights (clapkit.training.ema, timm's ModelEmaV3 rule),
        # updated after every optimizer step: a copy of the weights up to step start_step + 1, then
        # ema = decay * ema + (1 - decay) * weights; decay 0: off.
        # eval: validate (and pick checkpoint/ by) the averaged weights; checkpoint: checkpoint/ holds
        # them (last/ always holds the trained weights and the average, for --resume)
        "ema": {"decay": 0.0, "start_step": 0, "eval": True, "checkpoint": True},
        # CyCLIP's cyclic-consistency regularisers added to the loss (see losses.cyclip_regularisers)
        "cyclip": {"in_modal": 0.0, "cross_modal": 0.0},
        # S0's joint training: + weight x a SimCSE loss on the text backbone's x_t (the same
        # tower): "captions" (unsupervised, two dropout views of the batch's own captions),
        # "corpus" (unsupervised, on se.corpus) or "nli" (supervised, on se.nli triplets).
        # weight 0: plain cross-modal training, bit for bit
        "se": {
            "weight": 0.0,
            "loss": "captions",  # captions | corpus | nli
            "corpus": None,  # as cse.corpus: txt:FILE (one sentence a line) or stsb:DIR
            "nli": None,  # sent0,sent1,hard_neg CSV, or SNLI/MultiNLI .jsonl
            "batch_size": 64,  # corpus/nli: sentences (triplets) a step, over all processes
            "temperature": 0.05,
            "hard_negative_weight": 0.0,
            "cache_chunk": 0,  # gradient caching: rows a chunk (one process only); 0: off
        },
        "soft": {
            "teacher": None,  # teacher checkpoint (its embeddings come from `cache` when there)
            "cache": None,  # curation cache folder (default: OUT/teacher-cache)
            "weight": 0.5,  # 0: hard targets only (= clip), 1: teacher only
            "temperature": 0.1,
            "similarity": "mean",  # aa | tt | at | mean
        },
    },
}
