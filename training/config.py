"""The options of training, evaluation and demo data, with their defaults.

Deliberately free of torch, OpenCV and scikit-learn imports: the CLI reads these names to build
`--help`, which must stay fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from scanner.faces.view import DEFAULT_FACE_DETECTOR
from scanner.settings import usable_cores

# scanner.backbones.ARCHS without importing torch (tested)
ARCH_CHOICES = ("resnet50", "resnet34", "resnet18", "efficientnet_b0", "efficientnet_b4", "xception", "convnext_tiny")
DEFAULT_ARCH = "resnet50"
DEFAULT_IMAGE_SIZE_PX = 224  # scanner.detector.DEFAULT_IMAGE_SIZE_PX (tested)
# How training shows an image to the model: scanner.detector.CROP_MODES (resize, center), plus "random":
# windows placed at random in training and the centre one when scoring (tested), and "auto": resize
# the face crops of a face view that finds faces (a swap's blending traces are at the face's border,
# which a centre window cuts off), the centre window of whole images (where generator traces are
# everywhere and a resize would erase them). The default: on the real-data benchmark (README, 8 epochs
# from scratch) resized face crops reached valid ROC AUC 0.735 against 0.688 for the centre window.
CROP_CHOICES = ("auto", "resize", "center", "random")
DEFAULT_CROP = "auto"
DECODE_CHOICES = ("full", "reduced")  # scanner.detector.Preprocessing.decode
DEFAULT_EMA_DECAY = 0.0
# Self-blended fakes (training.selfblend): off; mix = beside the data's own fakes; only = from the real images
# alone; auto = mix with a face view that finds faces (the blend is a face swap's trace), off for whole images.
SELF_BLEND_CHOICES = ("auto", "off", "mix", "only")
DEFAULT_SELF_BLEND = "off"  # mix was not shown to win on the real-data benchmark at the budget measured (README)
LEGACY_SELF_BLEND = {"off": "False", "only": "True"}  # as training states saved when it was a flag name them
BLEND_MASK_CHOICES = ("hull", "ellipse")  # training.selfblend.MASK_CHOICES (tested)
DEFAULT_BLEND_MASK = "hull"
# Paired batches (training.pairs): auto = each fake beside the real it was made from (matched by scene
# thumbnail) when the data look paired, self-blended fakes beside their real; off = plain shuffling.
PAIRS_CHOICES = ("auto", "off")
DEFAULT_PAIRS = "off"
# Test-time augmentation, recorded in the checkpoint's preprocessing (scanner.detector.TTA_MODES, tested):
# flip = every score is the mean logit of the square and its mirror image, in validation, evaluate and scans.
TTA_CHOICES = ("none", "flip")
DEFAULT_TTA = "none"
# The model's input stem, recorded in the checkpoint (scanner.stems.STEMS, tested): srm = the backbone also
# reads three fixed high-pass (SRM) residuals of its square, where blending and resampling traces show.
STEM_CHOICES = ("none", "srm")
DEFAULT_STEM = "none"
# Probability of each training augmentation (training.augment.AugmentConfig; `--aug NAME=P`).
DEFAULT_AUGMENT_P = {"flip": 0.5, "crop": 0.0, "jitter": 0.2, "blur": 0.1, "downscale": 0.0, "jpeg": 0.1}
AUGMENT_NAMES = tuple(DEFAULT_AUGMENT_P)
DEFAULT_PRETRAINED = "imagenet"
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 32
# Peak learning rate, by how the backbone starts (`--lr` unset): a fine-tuning rate for pretrained
# weights; from scratch (`--pretrained none`) the plain loop's 1e-3, which on the real-data benchmark
# (README, resized face crops, 8 epochs) reached valid ROC AUC 0.735 against 0.717 at 3e-4.
DEFAULT_LR_PRETRAINED = 3e-4
DEFAULT_LR_SCRATCH = 1e-3
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_WARMUP_FRACTION = 0.05  # of all optimizer steps
DEFAULT_PATIENCE_EPOCHS = 5  # a noisy validation split of a few hundred images often dips two or three epochs in a row
DEFAULT_TARGET_FPR = 0.01
DEFAULT_EVAL_BATCH_SIZE = 64
MAX_DEFAULT_LOADER_WORKERS = 8
DEFAULT_DEMO_COUNT = 500  # images per class, over all splits
DEFAULT_DEMO_SEED = 0

SPLITS = ("train", "valid", "test")
LabelSource = Literal["auto", "folders", "csv"]
LABEL_SOURCES: tuple[LabelSource, ...] = ("auto", "folders", "csv")


def default_lr(pretrained: str) -> float:
    """The peak learning rate `--lr` stands for when unset: from scratch, or from pretrained weights."""
    return DEFAULT_LR_SCRATCH if pretrained == "none" else DEFAULT_LR_PRETRAINED


def default_loader_workers() -> int:
    """Decoding processes: one per spare core, at most eight."""
    return max(0, min(MAX_DEFAULT_LOADER_WORKERS, usable_cores() - 1))


@dataclass(frozen=True)
class TrainConfig:
    """Everything `training.train.train` needs; `deepscan train` options map one to one."""

    data: Path
    out: Path
    arch: str = DEFAULT_ARCH
    pretrained: str = DEFAULT_PRETRAINED  # "imagenet", "none" or a weights file path
    image_size: int = DEFAULT_IMAGE_SIZE_PX
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float | None = None  # None: default_lr(pretrained); `train` records the rate it resolved to
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    warmup_fraction: float = DEFAULT_WARMUP_FRACTION
    freeze_backbone_epochs: int = 0
    self_blend: str = DEFAULT_SELF_BLEND  # one of SELF_BLEND_CHOICES
    blend_mask: str = DEFAULT_BLEND_MASK  # the self-blend mask: the face's landmark hull, or an ellipse
    pairs: str = DEFAULT_PAIRS  # one of PAIRS_CHOICES: keep each fake in the batch of its real
    augment: bool = True
    augment_p: dict[str, float] = field(default_factory=dict)  # per-transform probabilities, see training.augment
    crop: str = DEFAULT_CROP  # "center"/"random" = native-resolution windows, "resize" = the whole image, "auto"
    tta: str = DEFAULT_TTA  # one of TTA_CHOICES: how every score of the checkpoint is taken
    stem: str = DEFAULT_STEM  # one of STEM_CHOICES: what the backbone reads besides the RGB square
    decode: str = "full"  # "reduced": JPEGs decoded at 1/2-1/8 scale, see scanner.detector.Preprocessing.decode
    ema: float = DEFAULT_EMA_DECAY  # decay of an exponential moving average of the weights; 0 = off
    device: str = "auto"
    # auto | fp32 | bf16: bf16 autocast in the step and in validation where the device runs it natively
    # (scanner/precision.py); `train` replaces auto with what it resolved to, as the checkpoint records it.
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    target_fpr: float = DEFAULT_TARGET_FPR
    patience: int = DEFAULT_PATIENCE_EPOCHS
    min_delta: float = 0.0  # a validation ROC AUC rise below this does not reset the patience count
    max_minutes: float | None = None  # no new epoch starts after this much training time; None: no limit
    workers: int | None = None  # None: default_loader_workers()
    labels: LabelSource = "auto"
    progress: bool | None = None  # None: show the progress bar when stderr is a terminal
    face_view: str = DEFAULT_FACE_DETECTOR  # the face detector of the face view; "none" for aligned crops
    face_cache: Path | None = None  # where face detections are cached; None: training.facecache's default

    @property
    def input_crop(self) -> str:
        """The crop mode "auto" stands for with this face view; any other mode as given."""
        if self.crop != "auto":
            return self.crop
        return "center" if self.face_view == "none" else "resize"

    @property
    def blend_mode(self) -> str:
        """The self-blend mode "auto" stands for with this face view; any other mode as given."""
        if self.self_blend != "auto":
            return self.self_blend
        return "off" if self.face_view == "none" else "mix"

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: `lr` as given, else the default for how the backbone starts."""
        return default_lr(self.pretrained) if self.lr is None else self.lr

    @property
    def loader_workers(self) -> int:
        return default_loader_workers() if self.workers is None else self.workers

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as recorded in the checkpoint's `train_config`."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def fingerprint(self) -> dict[str, str]:
        """The options a resumed run must share with the run it continues."""
        keys = ["arch", "image_size", "crop", "batch_size", "seed", "self_blend", "augment", "labels"]
        keys += ["face_view", "ema"]
        fingerprint = {"data": str(self.data.resolve()), **{k: str(getattr(self, k)) for k in keys}}
        fingerprint["crop"] = self.input_crop  # "auto" resumes a state saved under the mode it stands for
        fingerprint["self_blend"] = LEGACY_SELF_BLEND.get(self.blend_mode, self.blend_mode)
        changed = self.augment_changes()
        if self.augment and changed:  # only when changed, so states saved before this key still resume
            fingerprint["augment_p"] = ",".join(f"{name}={p:g}" for name, p in sorted(changed.items()))
        if self.decode != "full":  # likewise
            fingerprint["decode"] = self.decode
        if self.blend_mode != "off":
            fingerprint["blend_mask"] = self.blend_mask
        if self.pairs != "off":  # likewise
            fingerprint["pairs"] = self.pairs
        if self.tta != "none":  # likewise: it changes validation scores, so which epoch is kept
            fingerprint["tta"] = self.tta
        if self.stem != "none":  # likewise; it changes the model's weights, which a state must fit
            fingerprint["stem"] = self.stem
        return fingerprint

    def augment_changes(self) -> dict[str, float]:
        """The `--aug` probabilities that differ from the defaults (training.augment)."""
        return {k: float(p) for k, p in self.augment_p.items() if float(p) != DEFAULT_AUGMENT_P.get(k)}


def demo_config(data: Path, out: Path, *, self_blend: str = "off") -> TrainConfig:
    """A CPU run of about a minute on `deepscan demo-data` output: resnet18 at 64 px from scratch.

    Augmentation is off: demo images are already JPEGs of varied quality, and the crops and blur
    that make a real detector robust would triple the time the demo needs to learn. The demo's
    faces are small, so the model sees each whole face crop resized rather than a window of it.
    Self-blended fakes are subtler than the demo's generator fingerprint, so that run gets more epochs.
    It trains in fp32 on every CPU, so the demo checkpoint (and what the demo flags) is the same on a
    processor with native bf16 as on one without; its scan then runs at the machine's `auto` precision.
    """
    return TrainConfig(
        data=data,
        out=out,
        arch="resnet18",
        pretrained="none",
        image_size=64,
        epochs=6 if self_blend != "off" else 5,
        batch_size=32,
        lr=2e-3,
        self_blend=self_blend,
        augment=False,
        crop="resize",
        device="cpu",
        precision="fp32",
        patience=3 if self_blend != "off" else 2,
        workers=1,
    )
