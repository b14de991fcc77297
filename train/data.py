"""Training data: precomputed front-end features and transcripts, in length-sorted batches.

The data set (``data/``, ``docs/data.md``) stores each split's int8 golden front-end
features in one ``features.npz`` (read with ``data.features.read_features``). The float
model's input is the real feature value ``q * feature_scale`` (what
``golden.quantize.quantize_model`` expects with ``feature_scale`` fixed by the front end).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from golden.frontend import FrontendConfig
from golden.tokens import Tokenizer

__all__ = ["Batch", "Utterances", "load_split"]


@dataclass(frozen=True)
class Batch:
    """Padded tensors of a few utterances.

    Attributes
    ----------
    feats : torch.Tensor
        ``[B, T, F]`` float32 real-valued features (zero padded).
    lengths : torch.Tensor
        ``[B]`` int64 frames.
    tokens : torch.Tensor
        ``[B, U]`` int64 token ids (padded with 1, a valid id that is never scored).
    token_lengths : torch.Tensor
        ``[B]`` int64.
    index : numpy.ndarray
        Positions of the utterances in their :class:`Utterances`.
    """

    feats: torch.Tensor
    lengths: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor
    index: np.ndarray

    @property
    def frame_mask(self) -> torch.Tensor:
        """``[B, T]`` 1.0 on real frames, 0.0 on padding."""
        t = torch.arange(self.feats.shape[1])
        return (t[None, :] < self.lengths[:, None]).float()


class Utterances:
    """One split in memory: int8 features, transcripts and their token ids.

    Parameters
    ----------
    features : list of numpy.ndarray
        int8 ``[T_i, F]`` per utterance.
    transcripts : list of str
    frontend : FrontendConfig
    tokenizer : Tokenizer
    """

    def __init__(self, *, features: list[np.ndarray], transcripts: list[str],
                 frontend: FrontendConfig, tokenizer: Tokenizer):
        if len(features) != len(transcripts):
            raise ValueError(f"{len(features)} feature arrays but {len(transcripts)} "
                             "transcripts")
        if not features:
            raise ValueError("a split needs at least one utterance")
        for i, f in enumerate(features):
            if f.dtype != np.int8 or f.ndim != 2 or f.shape[1] != frontend.feature_dim \
                    or len(f) < 1:
                raise ValueError(f"utterance {i}: features must be int8 [T >= 1, "
                                 f"{frontend.feature_dim}], got {f.dtype} {f.shape}")
        self.features = features
        self.transcripts = [str(t) for t in transcripts]
        self.frontend = frontend
        self.tokens = [tokenizer.encode(t) for t in self.transcripts]
        self.lengths = np.array([len(f) for f in features])

    def __len__(self) -> int:
        return len(self.features)

    def real_features(self, i: int) -> np.ndarray:
        """Utterance ``i``'s features as real values, float64 ``[T, F]``."""
        return self.features[i].astype(np.float64) * self.frontend.feature_scale

    def feature_stats(self, max_utterances: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and standard deviation of the real feature values."""
        x = np.concatenate([self.real_features(i) for i in range(min(len(self),
                                                                      max_utterances))])
        return x.mean(0), np.maximum(x.std(0), 1e-3)

    def tokens_per_frame(self) -> float:
        """Mean tokens per encoder frame over the split."""
        return sum(len(t) for t in self.tokens) / float(self.lengths.sum())

    def batch(self, index) -> Batch:
        """Pad utterances ``index`` into a :class:`Batch`."""
        index = np.asarray(index)
        t_max = int(self.lengths[index].max())
        u_max = max(1, max(len(self.tokens[i]) for i in index))
        f = self.frontend.feature_dim
        feats = np.zeros((len(index), t_max, f), np.float32)
        toks = np.ones((len(index), u_max), np.int64)
        for k, i in enumerate(index):
            feats[k, :self.lengths[i]] = self.real_features(i)
            toks[k, :len(self.tokens[i])] = self.tokens[i]
        return Batch(torch.from_numpy(feats), torch.from_numpy(self.lengths[index].copy()),
                     torch.from_numpy(toks),
                     torch.tensor([len(self.tokens[i]) for i in index], dtype=torch.int64),
                     index)

    def batches(self, batch_size: int, *, seed: int | None) -> list[np.ndarray]:
        """Index arrays of length-sorted batches; shuffled order (``seed``) or sorted (None).

        Sorting by length keeps padding small; a seeded jitter of the sort key and a
        shuffle of the batch order vary the batches between epochs.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        key = self.lengths.astype(np.float64)
        rng = np.random.default_rng(seed) if seed is not None else None
        if rng is not None:
            key = key + rng.uniform(0, 8, len(key))
        order = np.argsort(key, kind="stable")
        out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if rng is not None:
            rng.shuffle(out)
        return out


def load_split(path, tokenizer: Tokenizer, *, limit: int | None = None) -> Utterances:
    """Read a ``features.npz`` (``data.features``) into :class:`Utterances`.

    Parameters
    ----------
    path : str or os.PathLike
    tokenizer : Tokenizer
    limit : int, optional
        Keep only the first ``limit`` utterances.
    """
    from data.features import read_features

    fs = read_features(path)
    n = len(fs) if limit is None else min(len(fs), int(limit))
    feats, texts = [], []
    for i in range(n):
        f, t = fs.utterance(i)
        feats.append(np.ascontiguousarray(f))
        texts.append(t)
    return Utterances(features=feats, transcripts=texts, frontend=fs.frontend,
                      tokenizer=tokenizer)
