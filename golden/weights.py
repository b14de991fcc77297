"""NEP compressed weight images: compressor, decompressor and the golden matrix-vector product.

The format is specified in ``docs/weight-format.md``; this module is its reference
implementation. An image holds one matrix (``rows x cols``) with its per-row bias and
requantization parameters. Nonzero weights are stored as a *stream* of fixed-size words,
each carrying ``lanes`` slots of (column delta, 4-bit value code), so the processor decodes
one word per cycle and hands ``lanes`` nonzero weights to the MAC array.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .numerics import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    MAX_LEFT_SHIFT,
    MAX_RIGHT_SHIFT,
    multiply_by_quantized_multiplier,
    requantize_to_int8,
    saturate,
    wrap_int32,
)

MAGIC = b"NEPW"
VERSION = 1
#: Bits of the column delta in a slot; a gap of more than 31 columns costs escape slots.
DELTA_BITS = 5
#: Bits of the value code in a slot.
CODE_BITS = 4
SLOT_BITS = DELTA_BITS + CODE_BITS
MAX_DELTA = (1 << DELTA_BITS) - 1
#: Supported lane counts (slots per stream word).
LANE_CHOICES = (4, 8, 16)
MAX_DIM = 0xFFFF

_HEADER = struct.Struct("<4sHBBHHII16bII")  # everything before the header CRC
HEADER_BYTES = _HEADER.size + 4
PARAM_BYTES = 9  # bias i32, multiplier i32, shift i8


class Encoding(enum.IntEnum):
    """How a slot's 4-bit code (or pair of codes) turns into an int8 weight."""

    INT8 = 0  #: two slots per weight: high and low nibble of the int8 value
    INT4 = 1  #: the code is a two's-complement int4 in -8..7
    CODEBOOK = 2  #: the code indexes 16 int8 entries; entry 0 must be 0


class ImageError(ValueError):
    """A weight image (or the matrix given to the compressor) is malformed."""


def split_bits(lanes: int) -> int:
    """Width of a word's ``split`` field: it counts 0..lanes slots."""
    return lanes.bit_length()


def word_bits(lanes: int) -> int:
    """Bits in one stream word: ``end`` flag, ``split`` field, then ``lanes`` slots."""
    return 1 + split_bits(lanes) + lanes * SLOT_BITS


def word_bytes(lanes: int) -> int:
    return (word_bits(lanes) + 7) // 8


def entries_per_word(lanes: int, encoding: Encoding) -> int:
    """Weights a word can carry: int8 weights take two slots."""
    return lanes // 2 if encoding == Encoding.INT8 else lanes


@dataclass(frozen=True)
class Header:
    """The fixed-size header at the start of every image."""

    version: int
    encoding: Encoding
    lanes: int
    rows: int
    cols: int
    n_words: int
    nnz: int
    codebook: tuple[int, ...]
    crc_params: int
    crc_stream: int
    crc_header: int

    def pack_without_crc(self) -> bytes:
        return _HEADER.pack(
            MAGIC, self.version, int(self.encoding), self.lanes, self.rows, self.cols,
            self.n_words, self.nnz, *self.codebook, self.crc_params, self.crc_stream,
        )

    def pack(self) -> bytes:
        return self.pack_without_crc() + struct.pack("<I", self.crc_header)


@dataclass(frozen=True)
class Matrix:
    """A decoded layer: int8 weights (zeros in place) and per-row parameters."""

    weights: np.ndarray  # int8 [rows, cols]
    bias: np.ndarray  # int32 [rows]
    multiplier: np.ndarray  # int32 [rows]
    shift: np.ndarray  # int8 [rows]
    encoding: Encoding
    codebook: tuple[int, ...]


# ---------------------------------------------------------------------------- words


def pack_word(end: bool, split: int, slots: list[tuple[int, int]], lanes: int) -> int:
    """Pack one stream word. ``slots`` is a list of ``(delta, code)``, padded to ``lanes``."""
    slots = slots + [(0, 0)] * (lanes - len(slots))
    word = int(end) | (split << 1)
    pos = 1 + split_bits(lanes)
    for delta, code in slots:
        word |= (delta | (code << DELTA_BITS)) << pos
        pos += SLOT_BITS
    return word


def unpack_word(word: int, lanes: int) -> tuple[bool, int, list[tuple[int, int]]]:
    end = bool(word & 1)
    split = (word >> 1) & ((1 << split_bits(lanes)) - 1)
    pos = 1 + split_bits(lanes)
    slots = []
    for _ in range(lanes):
        s = (word >> pos) & ((1 << SLOT_BITS) - 1)
        slots.append((s & MAX_DELTA, s >> DELTA_BITS))
        pos += SLOT_BITS
    return end, split, slots


# ---------------------------------------------------------------------------- codes


def _validate_codebook(codebook) -> tuple[int, ...]:
    cb = tuple(int(v) for v in codebook)
    if len(cb) != 16:
        raise ImageError(f"codebook must have 16 entries, got {len(cb)}")
    if any(v < INT8_MIN or v > INT8_MAX for v in cb):
        raise ImageError("codebook entries must be int8")
    if cb[0] != 0:
        raise ImageError("codebook entry 0 must be 0 (code 0 marks padding and escapes)")
    if len(set(cb[1:])) != 15 or 0 in cb[1:]:
        raise ImageError("codebook entries 1..15 must be distinct and nonzero")
    return cb


def _codes_for(values: np.ndarray, encoding: Encoding, codebook) -> list[tuple[int, ...]]:
    """Slot codes for each nonzero weight value (one code, or two for int8)."""
    if encoding == Encoding.INT8:
        return [((int(v) & 0xFF) >> 4, int(v) & 0xF) for v in values]
    if encoding == Encoding.INT4:
        if np.any((values < -8) | (values > 7)):
            raise ImageError("int4 encoding needs weights in -8..7")
        return [(int(v) & 0xF,) for v in values]
    lookup = {v: i for i, v in enumerate(codebook)}
    missing = sorted({int(v) for v in values} - set(lookup))
    if missing:
        raise ImageError(f"weights {missing[:8]} are not in the codebook")
    return [(lookup[int(v)],) for v in values]


def decode_code(codes: tuple[int, ...], encoding: Encoding, codebook) -> int:
    """The int8 weight a slot (or slot pair, for int8) stands for."""
    if encoding == Encoding.INT8:
        v = (codes[0] << 4) | codes[1]
        return v - 256 if v >= 128 else v
    if encoding == Encoding.INT4:
        return codes[0] - 16 if codes[0] >= 8 else codes[0]
    return codebook[codes[0]]


# ---------------------------------------------------------------------------- compress


def _row_entries(row: np.ndarray, encoding: Encoding, codebook) -> list[tuple[int, tuple]]:
    """(delta, codes) entries for one row: escapes for long gaps, at least one entry."""
    cols = np.flatnonzero(row)
    codes = _codes_for(row[cols], encoding, codebook)
    zero = (0, 0) if encoding == Encoding.INT8 else (0,)
    entries = []
    pos = 0
    for c, code in zip(cols.tolist(), codes):
        gap = c - pos
        while gap > MAX_DELTA:
            entries.append((MAX_DELTA, zero))
            gap -= MAX_DELTA
        entries.append((gap, code))
        pos = c
    if not entries:
        entries.append((0, zero))  # an empty row still needs a slot to end on
    return entries


def _slots(entries: list[tuple[int, tuple]]) -> list[tuple[int, int]]:
    """Flatten entries to slots: the second slot of an int8 pair has delta 0."""
    out = []
    for delta, codes in entries:
        out.append((delta, codes[0]))
        if len(codes) == 2:
            out.append((0, codes[1]))
    return out


def _pack_stream(rows_entries: list[list], lanes: int, encoding: Encoding) -> list[int]:
    """Pack rows into words, at most one row ending in each word (the MAC array's rule).

    A row that ends mid-word lets the next row start in the same word; that next row must
    then end in a later word, so it keeps at least one entry back for it.
    """
    per_word = entries_per_word(lanes, encoding)
    words: list[tuple[bool, int, list]] = []
    cur: list = []
    cur_split = None  # where a row ended in ``cur``, if one did

    def flush():
        nonlocal cur, cur_split
        end = cur_split is not None
        words.append((end, cur_split if end else per_word, cur))
        cur, cur_split = [], None

    for entries in rows_entries:
        i, n = 0, len(entries)
        while i < n:
            space = per_word - len(cur)
            if cur_split is not None:
                take = min(space, n - i - 1)
                cur.extend(entries[i:i + take])
                i += take
                flush()
                continue
            take = min(space, n - i)
            cur.extend(entries[i:i + take])
            i += take
            if i == n:
                cur_split = len(cur)
                if len(cur) == per_word:
                    flush()
            else:
                flush()
    if cur or cur_split is not None:
        flush()
    return [pack_word(end, split, _slots(ents), lanes) for end, split, ents in words]


def _crc(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def _check_params(rows: int, bias, multiplier, shift):
    bias = np.asarray(bias)
    multiplier = np.asarray(multiplier)
    shift = np.asarray(shift)
    for name, a in (("bias", bias), ("multiplier", multiplier), ("shift", shift)):
        if a.shape != (rows,):
            raise ImageError(f"{name} has shape {a.shape}, expected ({rows},)")
        if not np.issubdtype(a.dtype, np.integer):
            raise ImageError(f"{name} must be integers, got {a.dtype}")
    if np.any((bias < -(1 << 31)) | (bias >= (1 << 31))):
        raise ImageError("bias must be int32")
    bad = (multiplier != 0) & ((multiplier < (1 << 30)) | (multiplier >= (1 << 31)))
    if np.any(bad):
        raise ImageError("multipliers must be 0 or in [2**30, 2**31) (Q0.31, normalized)")
    if np.any((shift < -MAX_RIGHT_SHIFT) | (shift > MAX_LEFT_SHIFT)):
        raise ImageError(f"shifts must be in -{MAX_RIGHT_SHIFT}..{MAX_LEFT_SHIFT}")
    return bias.astype(np.int32), multiplier.astype(np.int32), shift.astype(np.int8)


def pack_params(bias, multiplier, shift) -> bytes:
    """Per-row parameter records, 9 bytes each: bias, multiplier, shift."""
    return b"".join(
        struct.pack("<iib", int(b), int(m), int(s)) for b, m, s in zip(bias, multiplier, shift)
    )


def compress(weights, bias, multiplier, shift, *, encoding: Encoding, lanes: int = 8,
             codebook=None) -> bytes:
    """Compress an int8 weight matrix and its row parameters into an image.

    Parameters
    ----------
    weights : int array [rows, cols]
        Weight values; zeros are dropped. For ``INT4`` they must lie in -8..7, for
        ``CODEBOOK`` every nonzero must be an entry of ``codebook``.
    bias, multiplier, shift : int arrays [rows]
        Requantization parameters (see ``docs/numerics.md``).
    encoding : Encoding
    lanes : int
        Slots per stream word; must match the processor's lane count.
    codebook : sequence of 16 ints, optional
        Required for ``CODEBOOK``; entry 0 must be 0.
    """
    encoding = Encoding(encoding)
    if lanes not in LANE_CHOICES:
        raise ImageError(f"lanes must be one of {LANE_CHOICES}, got {lanes}")
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ImageError(f"weights must be a non-empty 2-D matrix, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer) or np.any((w < INT8_MIN) | (w > INT8_MAX)):
        raise ImageError("weights must be int8 values")
    rows, cols = w.shape
    if rows > MAX_DIM or cols > MAX_DIM:
        raise ImageError(f"shape {w.shape} exceeds {MAX_DIM}")
    if encoding == Encoding.CODEBOOK:
        if codebook is None:
            raise ImageError("codebook encoding needs a codebook")
        cb = _validate_codebook(codebook)
    else:
        if codebook is not None:
            raise ImageError(f"{encoding.name} encoding takes no codebook")
        cb = (0,) * 16
    bias, multiplier, shift = _check_params(rows, bias, multiplier, shift)
    rows_entries = [_row_entries(w[r].astype(np.int64), encoding, cb) for r in range(rows)]
    words = _pack_stream(rows_entries, lanes, encoding)
    wb = word_bytes(lanes)
    stream = b"".join(x.to_bytes(wb, "little") for x in words)
    params = pack_params(bias, multiplier, shift)
    header = Header(
        version=VERSION, encoding=encoding, lanes=lanes, rows=rows, cols=cols,
        n_words=len(words), nnz=int(np.count_nonzero(w)), codebook=cb,
        crc_params=_crc(params), crc_stream=_crc(stream), crc_header=0,
    )
    header = Header(**{**header.__dict__, "crc_header": _crc(header.pack_without_crc())})
    return header.pack() + params + stream


# ---------------------------------------------------------------------------- decompress


def parse_header(image: bytes) -> Header:
    """Read and check the header: magic, version, header CRC, field ranges, image length."""
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise ImageError(f"image must be bytes, got {type(image).__name__}")
    image = bytes(image)
    if len(image) < HEADER_BYTES:
        raise ImageError(f"image is {len(image)} bytes, shorter than the {HEADER_BYTES}-byte header")
    fields = _HEADER.unpack_from(image)
    magic, version, enc, lanes, rows, cols, n_words, nnz = fields[:8]
    codebook = tuple(fields[8:24])
    crc_params, crc_stream = fields[24:26]
    (crc_header,) = struct.unpack_from("<I", image, _HEADER.size)
    if magic != MAGIC:
        raise ImageError(f"not an NEP weight image (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ImageError(f"unsupported image version {version} (this build reads {VERSION})")
    if _crc(image[:_HEADER.size]) != crc_header:
        raise ImageError("header CRC mismatch: the header is corrupt")
    try:
        encoding = Encoding(enc)
    except ValueError:
        raise ImageError(f"unknown value encoding {enc}") from None
    if lanes not in LANE_CHOICES:
        raise ImageError(f"lanes {lanes} not one of {LANE_CHOICES}")
    if rows < 1 or cols < 1:
        raise ImageError(f"empty shape {rows}x{cols}")
    if encoding == Encoding.CODEBOOK:
        _validate_codebook(codebook)
    expected = HEADER_BYTES + rows * PARAM_BYTES + n_words * word_bytes(lanes)
    if len(image) != expected:
        raise ImageError(
            f"image is {len(image)} bytes but its header implies {expected} "
            f"({rows} rows of parameters, {n_words} stream words): truncated or padded"
        )
    return Header(version, encoding, lanes, rows, cols, n_words, nnz, codebook,
                  crc_params, crc_stream, crc_header)


def sections(image: bytes) -> tuple[Header, bytes, bytes]:
    """Header, parameter bytes and stream bytes, with both section CRCs checked."""
    h = parse_header(image)
    p0 = HEADER_BYTES
    s0 = p0 + h.rows * PARAM_BYTES
    params, stream = bytes(image[p0:s0]), bytes(image[s0:])
    if _crc(params) != h.crc_params:
        raise ImageError("parameter CRC mismatch: bias/scale records are corrupt")
    if _crc(stream) != h.crc_stream:
        raise ImageError("stream CRC mismatch: the compressed weights are corrupt")
    return h, params, stream


def stream_words(image: bytes) -> list[int]:
    """The stream words as integers, in memory order (what the weight memory holds)."""
    h, _, stream = sections(image)
    wb = word_bytes(h.lanes)
    return [int.from_bytes(stream[i:i + wb], "little") for i in range(0, len(stream), wb)]


def param_words(image: bytes) -> list[int]:
    """Per-row parameter records as 72-bit integers (what the parameter memory holds)."""
    h, params, _ = sections(image)
    return [int.from_bytes(params[i:i + PARAM_BYTES], "little")
            for i in range(0, len(params), PARAM_BYTES)]


def decompress(image: bytes) -> Matrix:
    """Decode an image back to its matrix, checking every rule the hardware checks."""
    h, params, _ = sections(image)
    words = stream_words(image)
    per_word = entries_per_word(h.lanes, h.encoding)
    step = 2 if h.encoding == Encoding.INT8 else 1
    w = np.zeros((h.rows, h.cols), dtype=np.int8)
    row, pos, nnz = 0, 0, 0
    row_has_weight = False
    for k, word in enumerate(words):
        if word >> word_bits(h.lanes):
            raise ImageError(f"word {k}: padding bits above bit {word_bits(h.lanes)} are set")
        end, split, slots = unpack_word(word, h.lanes)
        if split > per_word or (not end and split != per_word):
            raise ImageError(f"word {k}: split {split} invalid (end={end}, {per_word} entries)")
        if row >= h.rows:
            raise ImageError(f"word {k}: the stream goes on after its last row")
        for e in range(per_word):
            if end and e == split:
                row, pos, row_has_weight = row + 1, 0, False
            delta = slots[e * step][0]
            if step == 2 and slots[e * step + 1][0]:
                raise ImageError(f"word {k}: int8 low-nibble slot {e * step + 1} has a delta")
            codes = tuple(s[1] for s in slots[e * step:e * step + step])
            pos += delta
            if pos >= h.cols:
                raise ImageError(f"word {k}: column {pos} out of range (cols={h.cols})")
            if any(codes):
                if row >= h.rows:
                    raise ImageError(f"word {k}: weights after the last row")
                if delta == 0 and row_has_weight:
                    raise ImageError(f"word {k}: column {pos} of row {row} repeated")
                w[row, pos] = decode_code(codes, h.encoding, h.codebook)
                row_has_weight = True
                nnz += 1
        if end and split == per_word:
            row, pos, row_has_weight = row + 1, 0, False
    if row != h.rows:
        raise ImageError(f"stream ends {row} rows, header says {h.rows}: truncated stream")
    if nnz != h.nnz:
        raise ImageError(f"stream holds {nnz} nonzero weights, header says {h.nnz}")
    recs = [struct.unpack_from("<iib", params, i * PARAM_BYTES) for i in range(h.rows)]
    bias, mult, shift = _check_params(h.rows, *(np.array(c) for c in zip(*recs)))
    return Matrix(w, bias, mult, shift, h.encoding, h.codebook)


# ---------------------------------------------------------------------------- compute


#: Output modes of the matrix-vector product (the engine's ``out_mode`` codes, in order).
OUT_MODES = ("int8", "relu", "int16")


def matvec(weights, x, bias, multiplier, shift, *, mode: str = "int8") -> np.ndarray:
    """Golden quantized matrix-vector product ``y = requant(wrap32(W @ x + b))``.

    ``mode`` sets the result: ``"int8"``, ``"relu"`` (int8, negatives to 0) or ``"int16"``
    (saturated to int16: the LSTM's Q3.12 gate pre-activations).
    """
    if mode not in OUT_MODES:
        raise ValueError(f"mode must be one of {OUT_MODES}, got {mode!r}")
    acc = np.asarray(weights, dtype=np.int64) @ np.asarray(x, dtype=np.int64)
    acc = wrap_int32(acc + np.asarray(bias, dtype=np.int64))
    if mode == "int16":
        return saturate(multiply_by_quantized_multiplier(acc, multiplier, shift),
                        INT16_MIN, INT16_MAX).astype(np.int16)
    y = requantize_to_int8(acc, multiplier, shift)
    return np.maximum(y, 0).astype(np.int8) if mode == "relu" else y


def image_bits_per_weight(image: bytes) -> float:
    """All bits of the image (header, parameters, stream, CRCs) per matrix weight."""
    h = parse_header(image)
    return 8 * len(image) / (h.rows * h.cols)
