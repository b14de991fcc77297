"""Precomputed front-end features of a data-set split: one ``features.npz`` per split.

The ragged set of utterances is stored as one concatenated int8 array plus offsets, so
the trainer loads it in one read and never recomputes the golden front end.

File contents (``numpy.savez``, no pickles):

``features``     int8, ``(total_frames, feature_dim)``: every utterance's frames, in order
``offsets``      int64, ``(n + 1,)``: utterance ``i`` is ``features[offsets[i]:offsets[i+1]]``
``transcripts``  str, ``(n,)``
``files``        str, ``(n,)``: WAV file names relative to the split directory
``frontend``     str, ``()``: JSON of the :class:`golden.frontend.FrontendConfig` used
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from golden.frontend import FrontendConfig

_KEYS = ("features", "offsets", "transcripts", "files", "frontend")


@dataclass(frozen=True)
class FeatureSet:
    """Features of one split.

    Attributes
    ----------
    features : numpy.ndarray
        int8, ``(total_frames, feature_dim)``.
    offsets : numpy.ndarray
        int64, ``(n + 1,)``, starting at 0, non-decreasing, ending at ``total_frames``.
    transcripts, files : numpy.ndarray
        str, ``(n,)``.
    frontend : golden.frontend.FrontendConfig
        Front-end settings the features were computed with.
    """

    features: np.ndarray
    offsets: np.ndarray
    transcripts: np.ndarray
    files: np.ndarray
    frontend: FrontendConfig

    def __len__(self) -> int:
        return len(self.transcripts)

    def utterance(self, i: int) -> tuple[np.ndarray, str]:
        """Frames ``(T, feature_dim)`` and transcript of utterance ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"utterance index {i} out of range 0..{len(self) - 1}")
        return self.features[self.offsets[i]:self.offsets[i + 1]], str(self.transcripts[i])


def write_features(path: str | os.PathLike[str], *, frames: list[np.ndarray],
                   transcripts: list[str], files: list[str],
                   frontend: FrontendConfig) -> None:
    """Write a split's features as ``features.npz``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (overwritten).
    frames : list of numpy.ndarray
        Per utterance, int8 ``(T_i, frontend.feature_dim)``.
    transcripts, files : list of str
        Per utterance, same length as ``frames``.
    frontend : golden.frontend.FrontendConfig

    Raises
    ------
    ValueError
        If the lists differ in length or a frame array has the wrong dtype or width.
    """
    if not len(frames) == len(transcripts) == len(files):
        raise ValueError(f"frames, transcripts and files must have the same length, got "
                         f"{len(frames)}, {len(transcripts)}, {len(files)}")
    dim = frontend.feature_dim
    for i, f in enumerate(frames):
        if f.dtype != np.int8 or f.ndim != 2 or f.shape[1] != dim:
            raise ValueError(f"frames[{i}] must be int8 of shape (T, {dim}), "
                             f"got {f.dtype} {f.shape}")
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in frames], out=offsets[1:])
    features = (np.concatenate(frames) if frames else np.zeros((0, dim), dtype=np.int8))
    with open(path, "wb") as fh:
        np.savez(fh, features=features, offsets=offsets,
                 transcripts=np.array(transcripts, dtype=str),
                 files=np.array(files, dtype=str),
                 frontend=np.array(json.dumps(frontend.to_dict(), sort_keys=True)))


def read_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a ``features.npz`` written by :func:`write_features`, checking its layout.

    Raises
    ------
    ValueError
        If a key is missing or the arrays are inconsistent.
    """
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in _KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{path}: not a features file, missing {missing}")
        features, offsets = z["features"], z["offsets"]
        transcripts, files = z["transcripts"], z["files"]
        frontend = FrontendConfig.from_dict(json.loads(str(z["frontend"])))
    n = len(transcripts)
    if features.dtype != np.int8 or features.ndim != 2 \
            or features.shape[1] != frontend.feature_dim:
        raise ValueError(f"{path}: features must be int8 (frames, {frontend.feature_dim}), "
                         f"got {features.dtype} {features.shape}")
    if offsets.shape != (n + 1,) or len(files) != n or offsets[0] != 0 \
            or offsets[-1] != len(features) or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{path}: offsets, transcripts and files are inconsistent "
                         f"({len(offsets)} offsets, {n} transcripts, {len(files)} files, "
                         f"{len(features)} frames)")
    return FeatureSet(features, offsets, transcripts, files, frontend)
