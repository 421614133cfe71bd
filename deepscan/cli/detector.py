"""`deepscan train`, `deepscan evaluate` and `deepscan demo-data`: the detector's commands.

The work is done by `training.train.train`, `training.evaluate.evaluate` and
`training.synthetic.write_demo_data`; torch and the training modules are imported inside each
command so `deepscan --help` stays fast (`training.config` is deliberately torch-free).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from deepscan.cli.context import AppContext, pass_app
from deepscan.cli.options import precision_option, require_checkpoint
from scanner.faces.view import DEFAULT_FACE_DETECTOR, FACE_DETECTORS, FaceView
from training import config as cfg


def choice_option(flag: str, choices: Sequence[str], default: str, help: str, **extra: Any) -> Callable[[Any], Any]:
    """One of a fixed set of words, its default shown in --help (most training options recorded in the checkpoint)."""
    return click.option(flag, type=click.Choice(choices), default=default, show_default=True, help=help, **extra)


DEVICE_OPTION = click.option(
    "--device",
    metavar="DEVICE",
    default=None,
    help="auto, cpu, cuda or cuda:N [env DEEPSCAN_DEVICE; default: auto = CUDA when available].",
)
BATCH_SIZE_HELP = "Images per batch."
WORKERS_OPTION = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Image decoding processes; 0 decodes in the main process [default: CPU cores - 1, at most 8].",
)
LABELS_OPTION = click.option(
    "--labels",
    type=click.Choice(cfg.LABEL_SOURCES),
    default="auto",
    show_default=True,
    help="Where labels come from: split folders (real/, fake/), the 140k CSV manifests "
    "(label 1 = real, 0 = fake), or auto (folders when present, else the manifests).",
)
FACE_CACHE_OPTION = click.option(
    "--face-cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where face detections are cached between epochs and runs, keyed by image content and detector "
    "[default: ~/.cache/deepscan/faces].",
)
DATA_HELP = (
    "Data set root: the 140k layout {train,valid,test}/{real,fake}/ (also found under "
    "real_vs_fake/real-vs-fake/), its train/valid/test.csv manifests, or a plain real/ + fake/ tree "
    "(split 80/10/10 by --seed)."
)


def _device(app: AppContext, device: str | None) -> str:
    from scanner.settings import validate_device

    return validate_device(device) if device else app.settings.device


def _augment_defaults() -> str:
    return ", ".join(f"{name}={p:g}" for name, p in cfg.DEFAULT_AUGMENT_P.items())


def _augment_probabilities(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            probability = float(number)
        except ValueError:
            probability = -1.0
        if not sep or name not in cfg.AUGMENT_NAMES or not 0 <= probability <= 1:
            raise click.BadParameter(
                f"{value!r} is not NAME=P with NAME one of {', '.join(cfg.AUGMENT_NAMES)} and P in [0, 1]", ctx, param
            )
        out[name] = probability
    return out


def _pretrained(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in ("none", "imagenet") or Path(value).is_file():
        return value
    raise click.BadParameter(f"{value!r} is neither 'imagenet', 'none' nor an existing weights file", ctx, param)


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help=DATA_HELP)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint to write (.safetensors), the best epoch by validation ROC AUC. Beside it go "
    "NAME.metrics.jsonl (one JSON line per epoch) and NAME.train-state.safetensors (for --resume).",
)
@choice_option(
    "--arch",
    cfg.ARCH_CHOICES,
    cfg.DEFAULT_ARCH,
    "Backbone: ResNet-18/34/50 and EfficientNet-B0/B4 (torchvision), Xception and ConvNeXt-Tiny (timm); "
    "resnet18 is small enough for CPU demos and tests, efficientnet_b4 is the SBI and DFDC-winner backbone.",
)
@click.option(
    "--pretrained",
    default=cfg.DEFAULT_PRETRAINED,
    show_default=True,
    metavar="imagenet|none|PATH",
    callback=_pretrained,
    help="Initial backbone weights: torchvision's ImageNet weights (from the torch cache, "
    "$TORCH_HOME/hub/checkpoints, downloaded there once when online), a local torchvision-format "
    "weights file, or none (from scratch).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=32),
    default=cfg.DEFAULT_IMAGE_SIZE_PX,
    show_default=True,
    help="Model input side in pixels, here, in evaluate and in the workers (see --crop).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=cfg.DEFAULT_EPOCHS,
    show_default=True,
    help="Most epochs to train; early stopping may end sooner.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=cfg.DEFAULT_BATCH_SIZE, show_default=True, help=BATCH_SIZE_HELP
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Peak AdamW learning rate, reached after a linear warmup and followed by cosine decay "
    f"[default: {cfg.DEFAULT_LR_SCRATCH:g} from scratch (--pretrained none), {cfg.DEFAULT_LR_PRETRAINED:g} "
    "from pretrained weights].",
)
@click.option(
    "--freeze-backbone-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train only the new one-logit head for the first N epochs (useful with pretrained weights).",
)
@choice_option(
    "--self-blend",
    cfg.SELF_BLEND_CHOICES,
    cfg.DEFAULT_SELF_BLEND,
    "Self-Blended Images: fakes made on the fly by blending an altered copy of each real face back into "
    "it. only (also a bare --self-blend) = train from real images alone, fake images in DATA ignored; "
    "mix = beside DATA's own fakes, validated on DATA's real fakes; off; auto = mix with a face view that "
    "finds faces, off with --face-view none.",
    is_flag=False,
    flag_value="only",
)
@choice_option(
    "--blend-mask",
    cfg.BLEND_MASK_CHOICES,
    cfg.DEFAULT_BLEND_MASK,
    "The self-blend mask: hull = the face's region, a hull placed by its five landmarks (SBI's choice); "
    "ellipse = a jittered ellipse around the crop's centre.",
)
@choice_option(
    "--pairs",
    cfg.PAIRS_CHOICES,
    cfg.DEFAULT_PAIRS,
    "auto = batch each fake beside the real image it was made from (matched by a thumbnail of the "
    "scene, one to one; only when the data look paired, as face swaps of original videos do) and each "
    "self-blended fake beside its real, so a batch contrasts the manipulation alone; off = plain shuffling.",
)
@DEVICE_OPTION
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds weight init, shuffling, augmentation, self-blending and the plain-tree split.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run from OUT's training state; pass the same options as before.",
)
@click.option(
    "--target-fpr",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=cfg.DEFAULT_TARGET_FPR,
    show_default=True,
    help="False-positive rate on the validation split's real images at which the threshold is calibrated.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=cfg.DEFAULT_PATIENCE_EPOCHS,
    show_default=True,
    help="Stop after this many epochs without a better validation ROC AUC.",
)
@click.option(
    "--min-delta",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="A validation ROC AUC rise smaller than this is not an improvement (on small, noisy validation "
    "splits, raise --patience rather than this).",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Start no new epoch after this many minutes of training (the best epoch so far is kept); "
    "--epochs still sets the learning-rate schedule [default: no limit].",
)
@click.option("--no-augment", is_flag=True, help="Turn off flips, crops, colour jitter, blur and JPEG re-compression.")
@click.option(
    "--aug",
    "augment_p",
    multiple=True,
    metavar="NAME=P",
    callback=_augment_probabilities,
    help="Set one augmentation's probability, e.g. --aug jpeg=0.1 --aug blur=0; NAME is one of "
    f"{', '.join(cfg.AUGMENT_NAMES)} (defaults: {_augment_defaults()}).",
)
@choice_option(
    "--crop",
    cfg.CROP_CHOICES,
    cfg.DEFAULT_CROP,
    "How an image (or face crop) becomes the model's square, recorded in the checkpoint: resize = the whole "
    "image or face crop resized to the square, border and all; center = its centre window at native resolution, "
    "which keeps the high-frequency traces generators leave; random = windows anywhere in training, the centre "
    "one when scoring; auto = resize with a face view that finds faces, center with --face-view none.",
)
@click.option(
    "--decode",
    type=click.Choice(cfg.DECODE_CHOICES),
    default="full",
    show_default=True,
    help="How JPEGs are decoded, recorded in the checkpoint and used by evaluate and every scan: full, or "
    "reduced = at 1/2, 1/4 or 1/8 scale while both sides stay at least twice the input size (libjpeg's "
    "scaled decoding: a 12-megapixel photo decodes 2-3x faster and scans about 4x faster). It changes "
    "pixels, so the model learns on what it will be shown; with --crop center the window then comes "
    "from the reduced image.",
)
@choice_option(
    "--tta",
    cfg.TTA_CHOICES,
    cfg.DEFAULT_TTA,
    "Test-time augmentation, recorded in the checkpoint and applied wherever it scores (validation, "
    "evaluate, calibrate, every scan): flip = the mean logit of each face (or image) and its mirror "
    "image, two forward passes per input; none = one.",
)
@choice_option(
    "--stem",
    cfg.STEM_CHOICES,
    cfg.DEFAULT_STEM,
    "The model's input stem, recorded in the checkpoint and used wherever it scores: srm = the backbone "
    "also reads three fixed high-pass (SRM) residuals of its input, where blending and resampling traces "
    "show, through a first convolution widened to 6 channels (the new ones start at zero, so pretrained "
    "weights start as they were); none = the RGB input alone.",
)
@click.option(
    "--ema",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=cfg.DEFAULT_EMA_DECAY,
    show_default=True,
    help="Validate and save an exponential moving average of the weights with this decay per step "
    "(e.g. 0.999); 0 = off.",
)
@choice_option(
    "--face-view",
    FACE_DETECTORS,
    DEFAULT_FACE_DETECTOR,
    "How images become model inputs, recorded in the checkpoint and used by evaluate and every scan: "
    "faces found by dlib's hog detector (eyes levelled by its landmarks) or OpenCV's haar cascade, cropped "
    "with a margin (the whole image when none is found); none = the whole image, for data sets that are "
    "already aligned face crops (the 140k set is).",
)
@FACE_CACHE_OPTION
@WORKERS_OPTION
@LABELS_OPTION
@precision_option
@pass_app
def train(
    app: AppContext,
    /,
    data: Path,
    out: Path,
    no_augment: bool,
    device: str | None,
    precision: str | None,
    **options: Any,
) -> None:
    """Fine-tune a detector on DATA and write the best checkpoint to OUT.

    AdamW with warmup and cosine decay, early stopping on validation ROC AUC. After each better
    epoch the threshold is calibrated on the validation split at --target-fpr and written into
    the checkpoint with the metrics.
    """
    if out.suffix != ".safetensors":
        raise click.BadParameter("the checkpoint must end in .safetensors", param_hint="--out")
    from training.train import train as run_training

    logging.getLogger("training").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))  # epoch lines
    config = cfg.TrainConfig(
        data=data,
        out=out,
        augment=not no_augment,
        device=_device(app, device),
        precision=precision or app.settings.precision,
        progress=app.show_progress(),
        **options,
    )
    result = run_training(config)
    stopped = " (stopped early)" if result.stopped_early else ""
    rows = [
        ("checkpoint", str(result.checkpoint)),
        ("version", result.model_version),
        ("face view", FaceView.named(config.face_view).describe()),
        ("precision", result.precision),
        ("best epoch", f"{result.best_epoch} of {result.epochs_run}{stopped}"),
        ("valid ROC AUC", f"{result.metrics['roc_auc']:.4f}"),
        ("threshold", f"{result.threshold:.6f} (at {config.target_fpr:g} false-positive rate on valid)"),
        ("metrics log", str(result.metrics_log)),
        ("time", f"{result.seconds:.0f} s"),
    ]
    click.echo("\n".join(f"{name:<14} {value}" for name, value in rows))
    if warning := result.metrics.get("calibration_warning"):
        click.echo(f"warning: {warning}", err=True)


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help=DATA_HELP)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint to evaluate (.safetensors) [env DEEPSCAN_CHECKPOINT].",
)
@click.option("--split", type=click.Choice(cfg.SPLITS), default="test", show_default=True, help="Which split to score.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table: metrics for people. json: metrics at top level (roc_auc, ...) plus `files`, every "
    "file's path, label and score.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write roc.png and score_histogram.png (scores per class) into.",
)
@click.option(
    "--scores-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every file's score to this CSV (columns path,label,score; score = P(fake)).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, max=1),
    default=None,
    help="Judge accuracy and the confusion matrix at this threshold instead of the checkpoint's.",
)
@DEVICE_OPTION
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=cfg.DEFAULT_EVAL_BATCH_SIZE,
    show_default=True,
    help=BATCH_SIZE_HELP,
)
@click.option(
    "--by-source",
    is_flag=True,
    help="Also report ROC AUC per source: each sub-folder of real/ or fake/ (one per manipulation method, "
    "say) against all images of the other class, the cross-manipulation figure the field reports.",
)
@FACE_CACHE_OPTION
@WORKERS_OPTION
@LABELS_OPTION
@precision_option
@pass_app
def evaluate(
    app: AppContext,
    /,
    data: Path,
    checkpoint: Path | None,
    fmt: str,
    plots: Path | None,
    scores_out: Path | None,
    device: str | None,
    precision: str | None,
    by_source: bool,
    **options: Any,
) -> None:
    """Score a split of DATA with a checkpoint and report how well it separates real from fake.

    Reports ROC AUC, average precision, accuracy at the checkpoint's threshold, equal error
    rate, TPR at 1% and 0.1% FPR, the confusion matrix and counts per class. Images go through
    the workers' own code: decode, the checkpoint's face view, preprocessing, and an image scores as
    its highest-scoring face, so each file's score is the one a default scan stores. Unreadable
    images are skipped and counted.
    """
    from training.evaluate import evaluate as run_evaluation
    from training.evaluate import write_scores_csv
    from training.plots import write_plots

    checkpoint = require_checkpoint(checkpoint or app.settings.checkpoint)
    report = run_evaluation(
        data, checkpoint, device=_device(app, device), precision=precision or app.settings.precision,
        progress=app.show_progress(fmt), **options,
    )  # fmt: skip
    if scores_out is not None:
        write_scores_csv(report, scores_out)
    if plots is not None:
        m = report.metrics
        write_plots(report.labels, report.scores, roc_auc=m.roc_auc, threshold=m.threshold, out=plots)
    sources = report.by_source() if by_source else None
    if fmt == "json":
        click.echo(json.dumps({**report.to_dict(), **({"by_source": sources} if sources else {})}, indent=2))
        return
    click.echo(format_table(report.to_dict(per_file=False)))
    if sources:
        from deepscan.cli.output import render_table

        rows = [(s["label"], s["source"], s["images"], f"{s['roc_auc']:.4f}") for s in sources]
        click.echo("\n" + render_table(("class", "source", "images", "ROC AUC vs the other class"), rows))


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned `name  value` lines."""
    rows = [
        ("checkpoint", report["checkpoint"]),
        ("model version", report["model_version"][:16]),
        ("split", f"{report['split']} ({report['real']} real, {report['fake']} fake, {report['skipped']} skipped)"),
        ("ROC AUC", f"{report['roc_auc']:.4f}"),
        ("average precision", f"{report['average_precision']:.4f}"),
        ("threshold", f"{report['threshold']:.6f}"),
        ("accuracy", f"{report['accuracy']:.4f}"),
        ("EER", f"{report['eer']:.4f}"),
        ("TPR @ 1% FPR", f"{report['tpr_at_fpr_1pct']:.4f}"),
        ("TPR @ 0.1% FPR", f"{report['tpr_at_fpr_0_1pct']:.4f}"),
        (
            "confusion",
            f"real->real {report['tn']}, real->fake {report['fp']}, fake->real {report['fn']}, "
            f"fake->fake {report['tp']}",
        ),
    ]
    if "face_view" in report:
        rows.insert(2, ("face view", report["face_view"]))
    if "precision" in report:
        rows.insert(2, ("precision", report["precision"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--count",
    type=click.IntRange(min=20),
    default=cfg.DEFAULT_DEMO_COUNT,
    show_default=True,
    help="Images per class (real and fake), split 70/15/15 into train/valid/test.",
)
@click.option("--seed", type=int, default=cfg.DEFAULT_DEMO_SEED, show_default=True, help="Seeds every image and video.")
def demo_data(out: Path, count: int, seed: int) -> None:
    """Write a synthetic, labelled demo data set to OUT (no downloads).

    Face-like "real" JPEGs and "fake" ones whose face was swapped by a simulated generator (an
    upsampling fingerprint in a blended face region), in the 140k layout
    OUT/{train,valid,test}/{real,fake}/, plus three MP4 clips in OUT/videos/ whose manipulated
    frame range is listed in OUT/demo-manifest.json. A demo and test aid only: it says nothing
    about how well a model detects real deepfakes.
    """
    from training.synthetic import DEMO_NOTE, write_demo_data

    manifest = write_demo_data(out, count=count, seed=seed)
    click.echo(f"wrote {2 * count} images and 3 videos under {out}; manifest {manifest}")
    click.echo(DEMO_NOTE)


@click.command()
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Real images kept apart from training: DATA/real/, or the --split folder of a data set (its real/ only).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint to calibrate (.safetensors) [env DEEPSCAN_CHECKPOINT].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the calibrated checkpoint [default: over --checkpoint].",
)
@click.option(
    "--target-fpr",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=cfg.DEFAULT_TARGET_FPR,
    show_default=True,
    help="Share of these real images the new threshold may flag.",
)
@click.option(
    "--split", type=click.Choice(cfg.SPLITS), default="valid", show_default=True, help="Split to read without real/."
)
@DEVICE_OPTION
@FACE_CACHE_OPTION
@WORKERS_OPTION
@precision_option
@pass_app
def calibrate(
    app: AppContext,
    /,
    data: Path,
    checkpoint: Path | None,
    out: Path | None,
    device: str | None,
    precision: str | None,
    **options: Any,
) -> None:
    """Set a checkpoint's threshold on a separate folder of real images, at --target-fpr.

    Scores them through the workers' path, at --precision as a worker on this machine would, and writes
    the checkpoint with the threshold at which at most --target-fpr of them are flagged, and that
    precision (weights unchanged, so a new model version). Warns when the folder holds fewer than
    10 / rate real images.
    """
    from training.calibrate import calibrate as run_calibration

    checkpoint = require_checkpoint(checkpoint or app.settings.checkpoint)
    if (out or checkpoint).suffix != ".safetensors":
        raise click.BadParameter("the checkpoint must end in .safetensors", param_hint="--out")
    result = run_calibration(
        checkpoint, data, out=out or checkpoint, device=_device(app, device),
        precision=precision or app.settings.precision, **options,
    )  # fmt: skip
    rows = [
        ("checkpoint", str(result.checkpoint)),
        ("version", result.model_version),
        ("precision", result.precision),
        ("threshold", f"{result.threshold:.6f} (was {result.previous_threshold:.6f})"),
        ("calibrated on", f"{result.real} real images at {result.target_fpr:g} false-positive rate"),
    ]
    click.echo("\n".join(f"{name:<14} {value}" for name, value in rows))
    if result.warning:
        click.echo(f"warning: {result.warning}", err=True)


COMMANDS: list[click.Command] = [train, evaluate, calibrate, demo_data]
