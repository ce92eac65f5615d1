"""Input checks shared by the metric modules.

Every problem with the inputs (mismatched shapes, labels other than 0/1, NaN scores, a test set
with a single class) raises :class:`~iqeclip.errors.UserError` with a one-line message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iqeclip.errors import UserError


def _binary_array(values: Any, what: str) -> np.ndarray:
    """Return ``values`` as a boolean array, raising if it holds anything other than 0 and 1."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.object_):
        raise UserError(f"{what} must be 0/1 or boolean; got an array of dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if np.any(bad):
        example = arr[bad].flat[0]
        raise UserError(f"{what} must be 0/1 or boolean; found the value {example}")
    return arr == 1


def _check_finite(scores: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{what} contain NaN or infinite values")


def _check_pair_shapes(
    first: np.ndarray, second: np.ndarray, what: str, names: tuple[str, str], axes: tuple[str, ...]
) -> None:
    """Raise unless two arrays have the same shape, with one axis per name in ``axes``.

    Args:
        first: The scores or maps.
        second: The labels or masks.
        what: The pair in error messages, e.g. ``"anomaly maps and masks"``.
        names: Short names of ``first`` and ``second``, e.g. ``("maps", "masks")``.
        axes: Names of the expected axes, e.g. ``("N", "H", "W")``, written as the shape
            ``(N, H, W)`` (``(N,)`` for one axis) in error messages.

    Raises:
        UserError: On a shape mismatch or the wrong number of axes.
    """
    if first.shape != second.shape:
        raise UserError(
            f"{what} must have the same shape; "
            f"got {names[0]} {first.shape} and {names[1]} {second.shape}"
        )
    if first.ndim != len(axes):
        shape = f"({', '.join(axes)}{',' if len(axes) == 1 else ''})"
        raise UserError(f"{what} must have shape {shape}; got {first.shape}")


def _image_inputs(scores: Any, labels: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-image scores and labels; return them as float64 scores and boolean labels.

    Args:
        scores: Anomaly scores, shape (N,).
        labels: Ground-truth labels, shape (N,), 0 = normal, 1 = abnormal.
        metric: Metric name used in error messages.

    Returns:
        ``(scores, labels)`` with shapes (N,) and (N,), dtypes float64 and bool.

    Raises:
        UserError: On a shape mismatch, non-binary labels, non-finite scores, or when the test
            set does not contain both classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels_raw = np.asarray(labels)
    _check_pair_shapes(scores, labels_raw, "image scores and labels", ("scores", "labels"), ("N",))
    labels_bool = _binary_array(labels_raw, "image labels")
    _check_finite(scores, "image scores")
    n_abnormal = int(labels_bool.sum())
    if scores.size == 0:
        raise UserError(f"{metric} needs both normal and abnormal images; the test set is empty")
    if n_abnormal in (0, scores.size):
        only = 1 if n_abnormal else 0
        raise UserError(
            f"{metric} needs both normal and abnormal images; the test set has only label {only}"
        )
    return scores, labels_bool


def _pixel_inputs(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate anomaly maps and ground-truth masks.

    Args:
        maps: Anomaly maps, shape (N, H, W), any real dtype.
        masks: Ground-truth masks, shape (N, H, W), boolean or 0/1.

    Returns:
        ``(maps, masks)`` with shape (N, H, W), dtypes float32 and bool (no copy when the inputs
        already have those dtypes).

    Raises:
        UserError: On a shape mismatch, masks other than 0/1, or non-finite map values.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks_raw = np.asarray(masks)
    _check_pair_shapes(
        maps, masks_raw, "anomaly maps and masks", ("maps", "masks"), ("N", "H", "W")
    )
    masks_bool = _binary_array(masks_raw, "pixel masks")
    _check_finite(maps, "anomaly maps")
    return maps, masks_bool


def _as_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """Return a numpy array, a torch tensor on any device, or a sequence as a CPU numpy array.

    Args:
        values: The array-like.
        dtype: The numpy dtype to convert to, or None to keep it. With float32, floating-point
            tensors are converted after the move to the CPU (no second copy on the
            accelerator; bfloat16, which numpy cannot hold, included).

    Returns:
        The numpy array (no copy when ``values`` already is one of that dtype).
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        values = values.detach().cpu()
        if dtype is np.float32 and values.is_floating_point():
            values = values.float()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def _require_both_pixel_classes(n_anomalous: int, n_pixels: int, metric: str) -> None:
    if n_pixels == 0:
        raise UserError(f"{metric} needs both normal and anomalous pixels; the maps are empty")
    if n_anomalous == 0:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no anomalous pixel"
        )
    if n_anomalous == n_pixels:
        raise UserError(
            f"{metric} needs both normal and anomalous pixels; the masks have no normal pixel"
        )


def _check_fpr_limit(fpr_limit: float) -> float:
    if not 0.0 < fpr_limit <= 1.0:
        raise UserError(f"the AUPRO FPR limit must be in (0, 1]; got {fpr_limit}")
    return float(fpr_limit)
