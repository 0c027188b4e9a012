"""Downstream evaluation as in the paper (§4, docs/design.md §4): linear probe, fine-tuning, SEN12MS transfer.

    fusmae-fast eval linear   --ckpt RUN/encoder.safetensors --data BEN --inputs s1 s2 s1+s2 --baseline random
    fusmae-fast eval finetune --ckpt RUN --data BEN
    fusmae-fast eval sen12ms  --ckpt RUN --data SEN12MS

Protocols
    linear:   encoder and patch projections frozen; features (CLS token, or the mean of the patch tokens
              with ``--pool mean``) are computed once and cached in memory, then a linear head (after a
              non-affine BatchNorm, as MAE's linear probe) is trained for 20 epochs, batch 128, AdamW,
              MultiLabelSoftMarginLoss, on a stratified, seeded 1% subset of the training labels
              (``--label-fraction``; the chosen names are written to ``subset_<task>.txt``).
    finetune: whole encoder trainable, 100% labels, 10 epochs, AdamW with warm-up + cosine,
              MultiLabelSoftMarginLoss, optional layer-wise lr decay (``--layer_decay``).
    sen12ms:  linear probe, 10 epochs, cross-entropy with label smoothing 0.1, simplified IGBP (10).
Inputs: ``s1``, ``s2`` or ``s1+s2``; a single modality uses the model's missing-modality handling
(the absent modality's tokens are not fed; see ``fusmae_fast.model``).
Outputs in ``--out``: ``metrics_<task>.json`` per task, ``results.md`` rendering every task present
(paper's Table 1 and Table 2 shapes), ``ap_per_class_<task>.png``, the label subsets, wall times.

The parts:

    config.py     EvalConfig, the tasks and their default settings
    tasks.py      what differs between the tasks: labels, loss, metrics, the built-in sample
    encoder.py    loading the encoder, feeding it the chosen modalities, pooling its features
    linear.py     the linear probe (linear, sen12ms): cached features, BatchNorm + Linear head
    finetune.py   fine-tuning: the classifier, layer-wise lr decay, training, prediction
    report.py     results.md (the AP-per-class figure is in fusmae_fast.plots)
    driver.py     run_evaluation: models, datasets, the labelled subset, protocols, outputs
    cli.py        fusmae-fast eval
"""

from fusmae_fast.evaluate.cli import add_arguments, run
from fusmae_fast.evaluate.config import DEFAULTS, INPUTS, TASKS, EvalConfig
from fusmae_fast.evaluate.driver import dataset_labels, run_evaluation, stratified_subset
from fusmae_fast.evaluate.encoder import load_model
from fusmae_fast.evaluate.finetune import FineTuneClassifier, finetune, layer_decay_groups, predict
from fusmae_fast.evaluate.linear import extract_features, train_linear_head
from fusmae_fast.evaluate.report import write_results_md
from fusmae_fast.evaluate.tasks import score
from fusmae_fast.plots import plot_ap_per_class

__all__ = [
    "DEFAULTS",
    "INPUTS",
    "TASKS",
    "EvalConfig",
    "FineTuneClassifier",
    "add_arguments",
    "dataset_labels",
    "extract_features",
    "finetune",
    "layer_decay_groups",
    "load_model",
    "plot_ap_per_class",
    "predict",
    "run",
    "run_evaluation",
    "score",
    "stratified_subset",
    "train_linear_head",
    "write_results_md",
]
