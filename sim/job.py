"""A matrix-vector job: a random quantized layer, its image, and the golden answer.

Shared by the Amaranth-simulator tests, the cocotb tests and the benchmark, so all three
drive the engine the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden import weights as gw
from golden.numerics import quantize_multiplier

#: A codebook with zero at entry 0 and 15 distinct nonzero int8 levels.
DEFAULT_CODEBOOK = (0, -96, -64, -40, -24, -14, -8, -3, 3, 8, 14, 24, 40, 64, 96, 127)


@dataclass(frozen=True)
class MatVecJob:
    image: bytes
    header: gw.Header
    x: np.ndarray  # int8 [cols]
    expected: np.ndarray  # int8 [rows]

    @property
    def words(self) -> list[int]:
        return gw.stream_words(self.image)

    @property
    def params(self) -> list[int]:
        return gw.param_words(self.image)

    def fields(self) -> dict[str, int]:
        """Header values for the engine's inputs (codebook packed as 16 bytes)."""
        h = self.header
        cb = 0
        for i, v in enumerate(h.codebook):
            cb |= (v & 0xFF) << (8 * i)
        return {"rows": h.rows, "cols": h.cols, "n_words": h.n_words, "nnz": h.nnz,
                "encoding": int(h.encoding), "codebook": cb,
                "crc_stream": h.crc_stream, "crc_params": h.crc_params}

    @property
    def ideal_cycles(self) -> int:
        return -(-self.header.nnz // self.header.lanes)


def random_weights(rng, rows, cols, sparsity, encoding):
    """Random weights of the encoding with exactly ``round(sparsity * rows * cols)`` zeros."""
    encoding = gw.Encoding(encoding)
    if encoding == gw.Encoding.INT8:
        w = rng.integers(-128, 128, (rows, cols))
        w[w == 0] = 1
    elif encoding == gw.Encoding.INT4:
        w = rng.integers(-8, 8, (rows, cols))
        w[w == 0] = 1
    else:
        w = np.array(DEFAULT_CODEBOOK)[rng.integers(1, 16, (rows, cols))]
    n_zero = int(round(sparsity * rows * cols))
    zero_at = rng.permutation(rows * cols)[:n_zero]
    w.reshape(-1)[zero_at] = 0
    return w


def make_job(rng, *, rows, cols, sparsity, encoding, lanes, zero_acts=0.1) -> MatVecJob:
    """A random layer with realistic requantization (outputs spread over int8)."""
    encoding = gw.Encoding(encoding)
    w = random_weights(rng, rows, cols, sparsity, encoding)
    x = rng.integers(-128, 128, cols)
    x[rng.random(cols) < zero_acts] = 0
    bias = rng.integers(-(1 << 14), 1 << 14, rows)
    # Scale so the typical accumulator maps to a spread of int8 values; vary per row.
    acc_rms = max(1.0, float(np.sqrt(np.mean((w.astype(float) @ x) ** 2))))
    mult, shift = [], []
    for r in range(rows):
        mm, ss = quantize_multiplier(float(60.0 / acc_rms * rng.uniform(0.5, 2.0)))
        mult.append(mm)
        shift.append(ss)
    cb = DEFAULT_CODEBOOK if encoding == gw.Encoding.CODEBOOK else None
    image = gw.compress(w, bias, mult, shift, encoding=encoding, lanes=lanes, codebook=cb)
    expected = gw.matvec(w, x, bias, mult, shift)
    return MatVecJob(image, gw.parse_header(image), x.astype(np.int8), expected)
