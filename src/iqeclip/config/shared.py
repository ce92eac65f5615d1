"""Options that several commands take: declared here once, defaults chosen by each dataclass; and
the groups of commands that options name in :attr:`~iqeclip.config.option.Option.commands`."""

from __future__ import annotations

from typing import Any

from iqeclip.config.option import Option
from iqeclip.errors import UserError, param

__all__ = [
    "AXIS",
    "BATCH_SIZE",
    "CKPT_PATH",
    "DATA_PATH",
    "DEVICE",
    "FEW",
    "LABEL_VALUES",
    "LAYOUT",
    "LEARNING_RATE",
    "MANIFEST",
    "MARGIN",
    "MAX_MEGAPIXELS",
    "MAX_SLICES",
    "MAX_TOTAL_MEGAPIXELS",
    "MIN_LESION_PX",
    "MODEL_COMMANDS",
    "MODEL_NAME",
    "OBJ",
    "ON_BAD_INPUT",
    "ORIENTATION",
    "OUT",
    "OVERWRITE",
    "PERCENTILE",
    "PRECISION",
    "PRETRAIN",
    "REPRODUCE",
    "RUNS",
    "SCORE",
    "SEED",
    "SETTING",
    "SHOT",
    "TEST",
    "TRAIN",
    "VOLUME_SCORE",
    "WINDOW",
    "WORKERS",
    "parse_label_values",
]

TRAIN = ("train-zero", "train-few")
TEST = ("test-zero", "test-few")
FEW = ("train-few", "test-few")
RUNS = (*TRAIN, *TEST)
REPRODUCE = ("reproduce",)
MODEL_COMMANDS = (*RUNS, "demo", "reproduce", "benchmark", "info", "import-checkpoint")
"""The commands that take every model option (test-* as overrides of the checkpoint's)."""
SCORE = ("predict", "serve", "calibrate")
"""The commands that score with a checkpoint: of its model, only moved weights and precision."""

MODEL_NAME = Option("open_clip architecture (ViT-L-14-336 in the paper; iqe-tiny for tests)")
PRETRAIN = Option(
    "none | an open_clip tag such as openai | a weights file (OpenAI TorchScript .pt, state "
    "dict, safetensors; fp32, fp16 or bf16)"
)
PRECISION = Option(
    "dtype of the frozen vision tower (fp16 needs CUDA); the trainable head always runs in fp32",
    choices=("fp32", "bf16", "fp16"),
)
OBJ = Option("target dataset")
DATA_PATH = Option("folder with the datasets: <Name>_AD (MVFA) or <Name> (BMAD) folders")
LAYOUT = Option(
    "folder layout of --data_path: mvfa (<Name>_AD/..., masks in Ungood/anomaly_mask) or bmad "
    "(<Name>/..., masks in Ungood/label); None: the one layout that holds the dataset",
    choices=("bmad", "mvfa"),
)
BATCH_SIZE = Option("batch size", minimum=1)
SEED = Option("random seed")
DEVICE = Option("auto | cpu | cuda | cuda:N")
SHOT = Option("K: abnormal and normal support images each", minimum=1)
LEARNING_RATE = Option(
    "learning rate (0.01 for the temperature)", aliases=("lr",), minimum=0, above=True
)
OVERWRITE = Option("replace existing outputs")
ON_BAD_INPUT = Option(
    "error: stop before any work at the first unusable file; skip: leave such files out, count "
    "them and list them in the run folder",
    choices=("error", "skip"),
)
CKPT_PATH = Option("checkpoint")
OUT = Option("output folder")
WINDOW = Option(
    "intensity window CENTRE,WIDTH (e.g. 40,400 for a CT HU window); None: each input kind's "
    "own rule (DICOM: its window; NIfTI: min-max; images: 8/16-bit full range). Recorded in "
    "the checkpoint at training; test, calibrate and predict apply the recorded rule unless "
    "given one"
)
PERCENTILE = Option(
    "clip intensities to percentiles LOW,HIGH before min-max (e.g. 1,99 for MRI); recorded "
    "like --window"
)
AXIS = Option(
    "the plane volumes are sliced across: 0 sagittal, 1 coronal, 2 axial (NIfTI: the file's "
    "voxel axis closest to it; with --orientation native: voxel axis 0, 1 or 2)",
    minimum=0,
    maximum=2,
)
ORIENTATION = Option(
    "how volume slices face the model: radiological (as a DICOM viewer shows them, for NIfTI, "
    "DICOM and every volume format), canonical (the RAS+ array order of checkpoints trained "
    "before it) or native (the file's voxel order)",
    choices=("radiological", "canonical", "native"),
)
MANIFEST = Option(
    "CSV file with columns path,label,mask (+ split, slice): images, DICOM files or series "
    "folders, NIfTI volumes with image masks or label volumes (docs/workflows.md)"
)
MIN_LESION_PX = Option("manifest volumes: labelled pixels that make a slice abnormal", minimum=1)
MARGIN = Option(
    "manifest volumes: leave out normal slices within this many slices of a lesion", minimum=0
)


def parse_label_values(value: Any) -> tuple[int, ...] | None:
    """The label values of ``--label_values`` (``1,2,4``; from a YAML file also ``4`` or
    ``[1, 2, 4]``): sorted, each once; None for None (any non-zero value counts).

    Raises:
        UserError: One line naming ``--label_values``: an empty value or item, or one that is
            not a whole number of at least 1.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    items = [item.strip() for item in text.split(",")]
    bad = [item for item in items if not (item.isascii() and item.isdigit() and int(item) >= 1)]
    if bad:
        what = f"{bad[0]!r} is not" if bad[0] else "an empty value is not"
        raise UserError(
            f"{param('label_values')} {value!r}: {what} a label value (comma-separated whole "
            "numbers of at least 1, e.g. 1,2,4)"
        )
    return tuple(sorted({int(item) for item in items}))


def _label_values_text(value: Any) -> str | None:
    """``--label_values`` checked when it is given, and kept as the text of its values."""
    values = parse_label_values(value)
    return None if values is None else ",".join(map(str, values))


LABEL_VALUES = Option(
    "label volumes: the label values that count as anomalous, comma-separated (e.g. 1,2,4 for "
    "BraTS; a DICOM-SEG's segment numbers) (None: any non-zero value)",
    parse=_label_values_text,
)
VOLUME_SCORE = Option(
    "a volume's score from its slice scores: max, or topk:K, the mean of the K highest"
)
SETTING = Option(
    "image-score rule (default: the checkpoint's training setting)", choices=("zero", "few")
)
BACKEND = Option(
    "what scores: torch (the checkpoint, PyTorch) or onnx (a model from iqeclip export, "
    "onnxruntime; pip install 'iqeclip[export]')",
    choices=("torch", "onnx"),
)
WORKERS = Option(
    "DataLoader worker processes that read the inputs (None: 4 on CUDA, 0 on the CPU)", minimum=0
)
MODEL_FILE = Option("--backend onnx: the model file written by iqeclip export")
MAX_MEGAPIXELS = Option(
    "largest slice read (an image, a page, a DICOM frame, a volume's slice), in megapixels "
    "(width x height), checked from the file's header before it is decoded; at most 89, "
    "Pillow's own decompression-bomb limit",
    minimum=0,
    above=True,
    maximum=89,
)
MAX_SLICES = Option(
    "most slices of one input (pages of a TIFF, frames of a DICOM file, files of a series "
    "folder, slices of a NIfTI volume), checked from the headers before any is decoded",
    minimum=1,
)
MAX_TOTAL_MEGAPIXELS = Option(
    "most pixels of one input's slices together, in megapixels (a 512 x 512 CT of 1900 slices "
    "is 500), checked from the headers before any is decoded",
    minimum=0,
    above=True,
)
