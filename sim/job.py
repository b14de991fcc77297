"""A matrix-vector job: a random quantized layer, its image, and the golden answer.

Shared by the Amaranth-simulator tests, the cocotb tests and the benchmark, so all three
drive the engine the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from golden import weights as gw
from golden.numerics import quantize_multiplier
from hw.errors import EngineError

#: A codebook with zero at entry 0 and 15 distinct nonzero int8 levels.
DEFAULT_CODEBOOK = (0, -96, -64, -40, -24, -14, -8, -3, 3, 8, 14, 24, 40, 64, 96, 127)


@dataclass(frozen=True)
class RunResult:
    """What one engine run left behind: the output buffer and the status registers."""

    outputs: np.ndarray  # the whole output buffer (max_rows entries)
    error: int
    cycles: int
    macs: int
    zero_acts: int
    stalls: int
    nnz_seen: int


#: Filled into the output buffer before each run to catch writes past the layer.
SENTINEL = 0x55


@dataclass(frozen=True)
class MatVecJob:
    """Memory contents and header fields for one engine run, and what it must produce.

    ``overrides`` replaces header fields as the engine sees them (used to build malformed
    runs); ``expected_error`` is the ``EngineError`` the run must end with.
    """

    header: gw.Header
    words: tuple[int, ...]
    params: tuple[int, ...]
    x: np.ndarray  # int8 [cols]
    expected: np.ndarray  # [rows], golden outputs (meaningful when no error)
    expected_error: EngineError = EngineError.OK
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_image(cls, image: bytes, x, expected, *, out_mode: int = 0) -> "MatVecJob":
        return cls(gw.parse_header(image), tuple(gw.stream_words(image)),
                   tuple(gw.param_words(image)), np.asarray(x, dtype=np.int8),
                   np.asarray(expected, dtype=np.int64),
                   overrides={"out_mode": out_mode} if out_mode else {})

    def fields(self) -> dict[str, int]:
        """Header values for the engine's inputs (codebook packed as 16 bytes)."""
        h = self.header
        cb = 0
        for i, v in enumerate(h.codebook):
            cb |= (v & 0xFF) << (8 * i)
        f = {"rows": h.rows, "cols": h.cols, "n_words": h.n_words, "nnz": h.nnz,
             "encoding": int(h.encoding), "codebook": cb,
             "crc_stream": h.crc_stream, "crc_params": h.crc_params, "out_mode": 0}
        f.update(self.overrides)
        return f

    @property
    def bits_per_weight(self) -> float:
        """Bits of the whole image (header, parameters, stream) per matrix weight."""
        h = self.header
        size = gw.HEADER_BYTES + h.rows * gw.PARAM_BYTES + h.n_words * gw.word_bytes(h.lanes)
        return 8 * size / (h.rows * h.cols)

    def check(self, res: RunResult) -> list[str]:
        """Everything wrong with a run's result (empty when it is right)."""
        problems = []
        if res.error != self.expected_error:
            problems.append(f"error {res.error}, expected {int(self.expected_error)}")
        rows = min(self.fields()["rows"], len(res.outputs))
        if self.expected_error == EngineError.OK:
            got = res.outputs[:self.header.rows]
            bad = np.flatnonzero(got != self.expected)
            if bad.size:
                r = int(bad[0])
                problems.append(f"{bad.size} outputs differ, first row {r}: "
                                f"{int(got[r])} != golden {int(self.expected[r])}")
            if res.nnz_seen != self.header.nnz:
                problems.append(f"decoded {res.nnz_seen} weights, image has {self.header.nnz}")
        beyond = np.flatnonzero(res.outputs[rows:] != SENTINEL)
        if beyond.size:
            problems.append(f"wrote past the layer: buffer entry {rows + int(beyond[0])}")
        return problems


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


def make_job(rng, *, rows, cols, sparsity, encoding, lanes, zero_acts=0.1,
             out_mode: int = 0) -> MatVecJob:
    """A random layer with realistic requantization (outputs spread over int8).

    ``out_mode`` indexes ``golden.weights.OUT_MODES``; int16 layers get a 256x larger
    scale so their outputs spread over int16 the same way.
    """
    encoding = gw.Encoding(encoding)
    w = random_weights(rng, rows, cols, sparsity, encoding)
    x = rng.integers(-128, 128, cols)
    x[rng.random(cols) < zero_acts] = 0
    bias = rng.integers(-(1 << 14), 1 << 14, rows)
    # Scale so the typical accumulator maps to a spread of int8 values; vary per row.
    acc_rms = max(1.0, float(np.sqrt(np.mean((w.astype(float) @ x) ** 2))))
    mult, shift = [], []
    for r in range(rows):
        gain = 256.0 if gw.OUT_MODES[out_mode] == "int16" else 1.0
        real = gain * 60.0 / acc_rms * rng.uniform(0.5, 2.0)
        mm, ss = quantize_multiplier(float(min(real, 100.0)))  # NEP multipliers stay < 128
        mult.append(mm)
        shift.append(ss)
    cb = DEFAULT_CODEBOOK if encoding == gw.Encoding.CODEBOOK else None
    image = gw.compress(w, bias, mult, shift, encoding=encoding, lanes=lanes, codebook=cb)
    expected = gw.matvec(w, x, bias, mult, shift, mode=gw.OUT_MODES[out_mode])
    return MatVecJob.from_image(image, x, expected, out_mode=out_mode)


#: Ways to break a job, each with the error the engine must report.
CORRUPTIONS = {
    "crc_stream": EngineError.CRC_STREAM, "crc_params": EngineError.CRC_PARAMS,
    "nnz": EngineError.NNZ, "truncated": EngineError.TRUNCATED,
    "length": EngineError.LENGTH, "column": EngineError.COLUMN,
    "split_range": EngineError.SPLIT, "split_no_end": EngineError.SPLIT,
    "rows_too_big": EngineError.SHAPE, "cols_too_big": EngineError.SHAPE,
    "words_too_many": EngineError.SHAPE, "zero_rows": EngineError.SHAPE,
    "encoding": EngineError.ENCODING,
    "repeat_column": EngineError.COLUMN, "int8_low_delta": EngineError.COLUMN,
    "out_mode": EngineError.MODE,
}


def corrupt(job: MatVecJob, kind: str, cfg) -> MatVecJob:
    """A malformed variant of ``job`` (which needs at least 2 rows, 2 words, a weight at
    a column > 0, and a nonzero weight whose code can change without becoming zero)."""
    h = job.header
    per_word = gw.entries_per_word(h.lanes, h.encoding)
    words, params, ov = list(job.words), list(job.params), dict(job.overrides)
    # The CRC corruptions hit the last row and the last stream word that can take one
    # (the last word of a dense layer): the readers' CRCs include a word two cycles after
    # it arrives (``hw.crc32.Crc32``), so those are the last to reach them.
    if kind == "crc_stream":
        k, bit = _flippable_code_bit(job)
        words[k] ^= 1 << bit
    elif kind == "crc_params":
        params[-1] ^= 1  # the bias LSB of the last row
    elif kind == "nnz":
        ov["nnz"] = h.nnz + 1
    elif kind == "truncated":
        ov["n_words"] = h.n_words - 1
    elif kind == "length":
        ov["rows"] = h.rows - 1
    elif kind == "column":
        w = gw.decompress(image_of(job)).weights
        ov["cols"] = int(np.flatnonzero(w.any(axis=0)).max())
    elif kind == "split_range":
        words[0] = (words[0] & ~(((1 << gw.split_bits(h.lanes)) - 1) << 1)) | ((per_word + 1) << 1) | 1
    elif kind == "split_no_end":
        words[0] = (words[0] & ~(((1 << gw.split_bits(h.lanes)) - 1) << 1) & ~1) | ((per_word - 1) << 1)
    elif kind == "rows_too_big":
        ov["rows"] = cfg.max_rows + 1
    elif kind == "cols_too_big":
        ov["cols"] = cfg.max_cols + 1
    elif kind == "words_too_many":
        ov["n_words"] = cfg.weight_depth + 1
    elif kind == "zero_rows":
        ov["rows"] = 0
    elif kind == "encoding":
        ov["encoding"] = 3
    elif kind == "out_mode":
        ov["out_mode"] = 3
    elif kind == "repeat_column":
        k, slot = _second_weight_of_a_row(job)
        words[k] &= ~(gw.MAX_DELTA << (1 + gw.split_bits(h.lanes) + slot * gw.SLOT_BITS))
    elif kind == "int8_low_delta":
        if h.encoding != gw.Encoding.INT8:
            raise ValueError("int8_low_delta needs an int8 job")
        words[0] |= 1 << (1 + gw.split_bits(h.lanes) + gw.SLOT_BITS)
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {sorted(CORRUPTIONS)}")
    return replace(job, words=tuple(words), params=tuple(params), overrides=ov,
                   expected_error=CORRUPTIONS[kind])


def image_of(job: MatVecJob) -> bytes:
    """The image bytes the job's memory contents came from."""
    wb = gw.word_bytes(job.header.lanes)
    stream = b"".join(w.to_bytes(wb, "little") for w in job.words)
    params = b"".join(p.to_bytes(gw.PARAM_BYTES, "little") for p in job.params)
    return job.header.pack() + params + stream


def _second_weight_of_a_row(job: MatVecJob) -> tuple[int, int]:
    """(word, slot) of a weight that directly follows another weight of its row."""
    h = job.header
    step = 2 if h.encoding == gw.Encoding.INT8 else 1
    per_word = gw.entries_per_word(h.lanes, h.encoding)
    for k, word in enumerate(job.words):
        end, split, slots = gw.unpack_word(word, h.lanes)
        nz = [any(c for _, c in slots[e * step:e * step + step]) for e in range(per_word)]
        for e in range(1, per_word):
            same_row = not end or (e < split) == (e - 1 < split)
            if nz[e] and nz[e - 1] and same_row:
                return k, e * step
    raise ValueError("job has no two adjacent weights in one row")


def _flippable_code_bit(job: MatVecJob) -> tuple[int, int]:
    """A (word, bit) whose flip changes a nonzero weight into another nonzero weight, in
    the last word that has one."""
    h = job.header
    sb = gw.split_bits(h.lanes)
    step = 2 if h.encoding == gw.Encoding.INT8 else 1
    for k, word in reversed(list(enumerate(job.words))):
        _, _, slots = gw.unpack_word(word, h.lanes)
        for e in range(0, h.lanes, step):
            codes = [c for _, c in slots[e:e + step]]
            flipped = [codes[0] ^ 8] + codes[1:]
            if any(codes) and any(flipped):
                return k, 1 + sb + e * gw.SLOT_BITS + gw.DELTA_BITS + 3
    raise ValueError("job has no weight whose code can be flipped")
