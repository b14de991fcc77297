"""Shared tiny models for the training tests."""

import numpy as np
import pytest
import torch

from golden.frontend import FrontendConfig
from golden.model import ModelConfig
from golden.tokens import Tokenizer, default_tokens
from train.data import Utterances
from train.model import RNNT


def tiny_config(**sizes) -> ModelConfig:
    """A small model with the real front end's 120 features and 29 tokens."""
    base = dict(fast_hidden=8, slow_hidden=12, enc_dim=10, arbitrator_hidden=6,
                pred_embed=6, pred_hidden=8, joint_dim=10)
    base.update(sizes)
    return ModelConfig(vocabulary=tuple(default_tokens()), frontend=FrontendConfig().to_dict(),
                       **base)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> RNNT:
    torch.manual_seed(0)
    return RNNT(config=tiny_config(), feature_mean=torch.full((120,), -1.0),
                feature_std=torch.full((120,), 5.0), seed=0)


@pytest.fixture
def tiny_utterances():
    """``make(n=4, seed=0)``: up to 4 short utterances of random int8 features."""
    def make(n=4, seed=0) -> Utterances:
        rng = np.random.default_rng(seed)
        texts = ["hey nep", "call anna", "stop", "lights on"][:n]
        feats = [rng.integers(-128, 60, (12 + 3 * i, 120)).astype(np.int8) for i in range(n)]
        return Utterances(features=feats, transcripts=texts, frontend=FrontendConfig(),
                          tokenizer=Tokenizer(default_tokens()))
    return make
