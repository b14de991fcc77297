"""PyTorch twin of the golden :class:`~golden.model.FloatModel`, for training.

Same layers, names, shapes, gate order (``i, f, g, o``) and wiring as
``golden.model.layer_specs``, so export is a copy of tensors (:meth:`RNNT.float_tensors`).
Training-only parts, all folded away at export:

* Input normalization. The arbitrator and the first LSTM of each branch see features of
  a few units (int8 steps of 0.125) and a backlog in frames (0..127). Parameters act on
  ``(x - mean) / std`` and ``backlog / BACKLOG_NORM``; :meth:`RNNT.effective` folds this
  into the raw-input weights and bias that golden uses (an exact rewrite).
* Quantization-aware training (:mod:`train.compress`): fake-quantized 4-bit weights with
  the golden quantizer's per-row scale over input-scaled columns, and pruning masks.
* A soft branch choice (:mod:`train.arbitration`): both branches run on every frame; the
  gate ``g`` (probability of the slow branch) mixes their outputs and decides how far
  each branch's state advances, so a hard gate (``g`` in ``{0, 1}``) is exactly golden's
  rule that the skipped branch's state is carried over unchanged.

The LSTM cell state is clamped to +-8 like golden's int16 Q3.12 cell.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from golden.model import BACKLOG_MAX, ModelConfig, layer_specs

from .arbitration import DeviceCost, GateSchedule, gate
from .compress import Compression

__all__ = ["BACKLOG_NORM", "CELL_LIMIT", "EncoderOutput", "RNNT"]

#: Backlog (frames) is divided by this inside the arbitrator while training.
BACKLOG_NORM = 16.0
#: Largest cell-state magnitude golden's int16 Q3.12 cell holds.
CELL_LIMIT = 8.0
#: Layers whose first ``feature_dim`` columns read the features.
_FEATURE_LAYERS = ("arb.hidden", "fast.lstm", "slow.lstm1")


def _key(name: str) -> str:
    """Golden tensor name -> ``nn.ParameterDict`` key (no dots allowed there)."""
    return name.replace(".", "__")


class EncoderOutput:
    """What :meth:`RNNT.encode` returns.

    Attributes
    ----------
    enc : torch.Tensor
        ``[B, T, E]`` encoder output (the gate's mix of the two branches).
    gate : torch.Tensor
        ``[B, T]`` slow-branch weight of each frame (0 fast, 1 slow; soft while training).
    slow_prob : torch.Tensor
        ``[B, T]`` noiseless ``sigmoid(l_slow - l_fast)``.
    backlog : torch.Tensor
        ``[B, T]`` simulated backlog (frames) when each frame was decided.
    """

    def __init__(self, enc, gate_, slow_prob, backlog):
        self.enc, self.gate, self.slow_prob, self.backlog = enc, gate_, slow_prob, backlog


class RNNT(nn.Module):
    """The NEP RNN-T in PyTorch.

    Parameters
    ----------
    config : ModelConfig
    feature_mean, feature_std : torch.Tensor
        ``[feature_dim]`` statistics of the real-valued training features.
    seed : int
        Initialization seed.
    """

    def __init__(self, *, config: ModelConfig, feature_mean: torch.Tensor,
                 feature_std: torch.Tensor, seed: int = 0):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        f = config.feature_dim
        feature_mean = torch.as_tensor(feature_mean, dtype=torch.float32)
        feature_std = torch.as_tensor(feature_std, dtype=torch.float32)
        if feature_mean.shape != (f,) or feature_std.shape != (f,):
            raise ValueError(f"feature_mean and feature_std must have shape ({f},)")
        if not bool(torch.all(feature_std > 0)):
            raise ValueError("feature_std must be positive")
        self.config = config
        self.specs = layer_specs(config)
        self.register_buffer("feature_mean", feature_mean.clone())
        self.register_buffer("feature_std", feature_std.clone())
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for s in self.specs.values():
            bound = 1.0 / math.sqrt(s.cols)
            w = (torch.rand(s.rows, s.cols, generator=gen) * 2 - 1) * bound * math.sqrt(3.0)
            b = torch.zeros(s.rows)
            if s.kind == "lstm":
                h = s.rows // 4
                b[h:2 * h] = 1.0  # forget gate open: long memory from the start
            self.weights[_key(s.name)] = nn.Parameter(w)
            self.biases[_key(s.name)] = nn.Parameter(b)
        self.embed = nn.Parameter(torch.randn(config.vocab_size, config.pred_embed,
                                              generator=gen) * 0.5)
        # Training aid only (not exported): a CTC head on the encoder output. The command
        # grammar is so predictable that the RNN-T alone settles on emitting the whole
        # transcript from the prediction network at frame 0 (measured: validation greedy
        # WER rose to 104% while the loss fell); CTC makes the encoder carry the tokens
        # at the frames where they are spoken.
        self.ctc_head = nn.Linear(config.enc_dim, config.vocab_size)
        self.compression = Compression(config)

    # ------------------------------------------------------------------ weights

    def effective(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of layer ``name`` acting on golden's raw inputs (float).

        Folds the input normalization and applies the pruning mask; no fake quantization.
        """
        w = self.weights[_key(name)] * self.compression.mask(name)
        b = self.biases[_key(name)]
        if name in _FEATURE_LAYERS:
            f = self.config.feature_dim
            scale = torch.ones(w.shape[1], device=w.device)
            scale[:f] = 1.0 / self.feature_std
            shift = torch.zeros(w.shape[1], device=w.device)
            shift[:f] = self.feature_mean
            if name == "arb.hidden":
                scale[f] = 1.0 / BACKLOG_NORM
            w = w * scale
            b = b - w @ shift
        return w, b

    def layer(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`effective` with the fake quantization of the current training phase."""
        w, b = self.effective(name)
        return self.compression.fake_quant(name, w), b

    def float_tensors(self) -> dict[str, "numpy.ndarray"]:  # noqa: F821
        """Every tensor of ``golden.model.FloatModel`` (float32 NumPy), golden's names."""
        out = {"pred.embed.table": self.embed.detach().float().cpu().numpy()}
        with torch.no_grad():
            for name in self.specs:
                w, b = self.effective(name)
                out[f"{name}.weight"] = w.float().cpu().numpy()
                out[f"{name}.bias"] = b.float().cpu().numpy()
        return out

    def shift_arbitrator(self, offset: float) -> None:
        """Add ``offset`` to the arbitrator's fast-branch logit bias (its operating point).

        Golden picks slow iff ``l_slow > l_fast``, so a positive offset sends more frames
        to the fast branch (``train.export.calibrate_arbitrator`` chooses it).
        """
        with torch.no_grad():
            self.biases[_key("arb.out")][0] += float(offset)

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _cell(z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM cell from gate pre-activations ``z`` (``i, f, g, o``) and cell ``c``."""
        i, f, g, o = z.chunk(4, dim=-1)
        c = (torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)).clamp(-CELL_LIMIT,
                                                                             CELL_LIMIT)
        return torch.sigmoid(o) * torch.tanh(c), c

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prediction network over ``[blank, tokens...]``.

        Parameters
        ----------
        tokens : torch.Tensor
            ``[B, U]`` int64 target tokens.

        Returns
        -------
        torch.Tensor
            ``[B, U + 1, Ph]``: output ``u`` has seen the blank and ``tokens[:u]``.
        """
        b = tokens.shape[0]
        ph = self.config.pred_hidden
        w, bias = self.layer("pred.lstm")
        pe = self.config.pred_embed
        inp = torch.cat((torch.zeros_like(tokens[:, :1]), tokens), dim=1)
        self.compression.observe_table("pred.embed", self.embed)
        x = self.embed[inp] @ w[:, :pe].T + bias  # [B, U+1, 4H]
        w_h = w[:, pe:].T
        h = x.new_zeros(b, ph)
        c = x.new_zeros(b, ph)
        outs = []
        for u in range(x.shape[1]):
            h, c = self._cell(x[:, u] + h @ w_h, c)
            outs.append(h)
        out = torch.stack(outs, dim=1)
        self.compression.observe("pred.lstm", out)
        return out

    def joint(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Joint network on every (frame, prefix) pair.

        ``enc [B, T, E]`` and ``pred [B, U+1, Ph]`` give logits ``[B, T, U+1, V]``.
        """
        w, b = self.layer("joint.hidden")
        e = self.config.enc_dim
        z = (enc @ w[:, :e].T)[:, :, None, :] + (pred @ w[:, e:].T + b)[:, None, :, :]
        h = torch.tanh(z) if self.config.joint_activation == "tanh" else torch.relu(z)
        w_o, b_o = self.layer("joint.out")
        return h @ w_o.T + b_o

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor, *, schedule: GateSchedule,
               cost: DeviceCost, decoder_rate: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> EncoderOutput:
        """Branching encoder with the arbitrator and the simulated device backlog.

        Parameters
        ----------
        feats : torch.Tensor
            ``[B, T, F]`` real-valued features (int8 step times the front end's scale).
        lengths : torch.Tensor
            ``[B]`` frames per utterance.
        schedule : GateSchedule
            Temperature, noise and hardness of the branch gate (or a fixed branch).
        cost : DeviceCost
            Per-call costs and device speed for the backlog simulation.
        decoder_rate : torch.Tensor, optional
            ``[B]`` tokens per frame (decoder work charged to each frame); default 0.
        generator : torch.Generator, optional
            Source of the gate noise.
        """
        bsz, t_max, f = feats.shape
        c = self.config
        hf, hs = c.fast_hidden, c.slow_hidden
        w_a, b_a = self.layer("arb.hidden")
        w_o, b_o = self.layer("arb.out")
        w_f, b_f = self.layer("fast.lstm")
        w_1, b_1 = self.layer("slow.lstm1")
        w_2, b_2 = self.layer("slow.lstm2")
        # Input halves of the first layers for all frames at once; recurrent halves per frame.
        arb_x = feats @ w_a[:, :f].T + b_a
        fast_x = feats @ w_f[:, :f].T + b_f
        slow_x = feats @ w_1[:, :f].T + b_1
        w_ab = w_a[:, f]
        w_fh, w_1h = w_f[:, f:].T, w_1[:, f:].T
        w_2x, w_2h = w_2[:, :hs].T, w_2[:, hs:].T
        zeros = feats.new_zeros
        h_f, c_f = zeros(bsz, hf), zeros(bsz, hf)
        h_1, c_1, h_2, c_2 = zeros(bsz, hs), zeros(bsz, hs), zeros(bsz, hs), zeros(bsz, hs)
        rate = zeros(bsz) if decoder_rate is None else decoder_rate
        frame_ms = cost.frame_shift_ms
        ready = cost.ready_ms(t_max, feats.device)  # [T]
        end_ms = ready[(lengths - 1).clamp(min=0)]  # [B]: the last frame is ready at the end
        free = zeros(bsz)  # when the device finishes the previous frame (ms)
        fast_out, slow1_out, slow_out = [], [], []
        gates, probs, backlogs, arb_h = [], [], [], []
        for t in range(t_max):
            start = torch.maximum(ready[t].expand(bsz), free)
            backlog = (torch.minimum(start, end_ms) - ready[t]).clamp(min=0) / frame_ms
            q = _round_half_up_ste(backlog).clamp(0, BACKLOG_MAX)
            a = torch.relu(arb_x[:, t] + q[:, None] * w_ab)
            logits = a @ w_o.T + b_o
            g, p = gate(logits[:, 1] - logits[:, 0], schedule, generator)
            nh_f, nc_f = self._cell(fast_x[:, t] + h_f @ w_fh, c_f)
            nh_1, nc_1 = self._cell(slow_x[:, t] + h_1 @ w_1h, c_1)
            nh_2, nc_2 = self._cell(nh_1 @ w_2x + h_2 @ w_2h + b_2, c_2)
            # A branch's state advances by its share of the frame; at g in {0, 1} the
            # skipped branch's state is carried over exactly.
            gs, gf = g[:, None], 1.0 - g[:, None]
            h_f, c_f = h_f + gf * (nh_f - h_f), c_f + gf * (nc_f - c_f)
            h_1, c_1 = h_1 + gs * (nh_1 - h_1), c_1 + gs * (nc_1 - c_1)
            h_2, c_2 = h_2 + gs * (nh_2 - h_2), c_2 + gs * (nc_2 - c_2)
            frame_cost = cost.frame_macs(g, rate)
            free = start + frame_cost * (1000.0 / cost.speed)
            fast_out.append(nh_f)
            slow1_out.append(nh_1)
            slow_out.append(nh_2)
            gates.append(g)
            probs.append(p)
            backlogs.append(backlog)
            arb_h.append(a)
        fast_h = torch.stack(fast_out, 1)
        slow_h = torch.stack(slow_out, 1)
        g = torch.stack(gates, 1)
        w_fp, b_fp = self.layer("fast.proj")
        w_sp, b_sp = self.layer("slow.proj")
        e_fast = fast_h @ w_fp.T + b_fp
        e_slow = slow_h @ w_sp.T + b_sp
        enc = e_fast + g[..., None] * (e_slow - e_fast)
        obs = self.compression.observe
        obs("arb.hidden", torch.stack(arb_h, 1))
        obs("fast.lstm", fast_h)
        obs("slow.lstm2", slow_h)
        obs("enc", torch.cat((e_fast, e_slow), -1))
        obs("slow.lstm1", torch.stack(slow1_out, 1))
        return EncoderOutput(enc, g, torch.stack(probs, 1), torch.stack(backlogs, 1))


class _RoundHalfUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _round_half_up_ste(x: torch.Tensor) -> torch.Tensor:
    """``golden.model.quantize_backlog``'s rounding with a straight-through gradient."""
    return _RoundHalfUp.apply(x)
