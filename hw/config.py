"""One configuration object from which every hardware parameter flows."""

from __future__ import annotations

from dataclasses import dataclass

from golden.weights import (
    LANE_CHOICES,
    PARAM_BYTES,
    split_bits,
    word_bits,
)

from .requantizer import LATENCY, PIPELINED_LATENCY


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of the matrix-vector engine.

    Parameters
    ----------
    lanes : int
        MAC lanes, and slots per compressed stream word (4, 8 or 16).
    max_rows : int
        Depth of the output buffer: the largest layer height.
    max_cols : int
        Depth of the activation buffer: the largest layer width.
    weight_depth : int
        Stream words the weight memory holds.
    param_depth : int or None
        Row parameter records the parameter memory holds (the width of ``p_base`` and
        ``p_req_addr``); None for ``max_rows`` (one record per row, base 0).
    fifo_depth : int
        Depth of the memory read FIFOs; 4 covers a 1-cycle memory at full rate.
    pipelined_requantizer : bool
        The 8-stage requantizer (``hw.requantizer``, ``pipelined=True``): a faster clock
        where logic is plentiful (ECP5), two cycles more per run (``latency``) and about
        350 more iCE40 logic cells.
    """

    lanes: int = 8
    max_rows: int = 1024
    max_cols: int = 1024
    weight_depth: int = 4096
    param_depth: int | None = None
    fifo_depth: int = 4
    pipelined_requantizer: bool = False

    def __post_init__(self):
        if self.lanes not in LANE_CHOICES:
            raise ValueError(f"lanes must be one of {LANE_CHOICES}, got {self.lanes}")
        for name in ("max_rows", "max_cols", "weight_depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or v > 1 << 20:
                raise ValueError(f"{name} must be an int in 1..2**20, got {v!r}")
        if self.param_depth is not None and (
                isinstance(self.param_depth, bool) or not isinstance(self.param_depth, int)
                or self.param_depth < 1 or self.param_depth > 1 << 20):
            raise ValueError(f"param_depth must be an int in 1..2**20 or None, "
                             f"got {self.param_depth!r}")
        if self.max_rows > 0xFFFF or self.max_cols > 0xFFFF:
            raise ValueError("max_rows and max_cols are limited to 65535 by the image format")
        if self.fifo_depth < 2:
            raise ValueError(f"fifo_depth must be at least 2, got {self.fifo_depth}")
        if not isinstance(self.pipelined_requantizer, bool):
            raise ValueError("pipelined_requantizer must be a bool, "
                             f"got {self.pipelined_requantizer!r}")

    @property
    def requantizer_stages(self) -> int:
        """Pipeline stages of the engine's requantizer."""
        return PIPELINED_LATENCY if self.pipelined_requantizer else LATENCY

    @property
    def word_bits(self) -> int:
        return word_bits(self.lanes)

    @property
    def split_bits(self) -> int:
        return split_bits(self.lanes)

    @property
    def param_bits(self) -> int:
        return 8 * PARAM_BYTES

    @property
    def col_bits(self) -> int:
        """Bits of a column position: enough for max_cols plus one word of deltas."""
        return max(self.max_cols, 31 * self.lanes).bit_length() + 1

    @property
    def row_bits(self) -> int:
        """Bits of a row count up to ``max_rows``."""
        return self.max_rows.bit_length()

    @property
    def waddr_bits(self) -> int:
        return max(1, (self.weight_depth - 1).bit_length())

    @property
    def paddr_bits(self) -> int:
        """Bits of a parameter memory address."""
        depth = self.max_rows if self.param_depth is None else self.param_depth
        return max(1, (depth - 1).bit_length())
