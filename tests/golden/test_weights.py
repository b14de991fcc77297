"""Compressed weight images (``golden/weights.py``, spec ``docs/weight-format.md``):
round trips, stream invariants read back with an independent decoder, malformed images,
compressor input checks, the golden matvec, and the bits-per-weight goal."""

import math
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.weights import (
    HEADER_BYTES,
    LANE_CHOICES,
    PARAM_BYTES,
    Encoding,
    ImageError,
    compress,
    decompress,
    image_bits_per_weight,
    matvec,
    pack_word,
    param_words,
    parse_header,
    split_bits,
    stream_words,
    unpack_word,
    word_bits,
    word_bytes,
)

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

# ----------------------------------------------------------------- the layout, from the spec
# docs/weight-format.md, written out independently of golden/weights.py.

HEADER_FMT = "<4sHBBHHII16bII"  # magic .. crc_stream; the header CRC follows
HEADER_FIELDS = ("magic", "version", "encoding", "lanes", "rows", "cols", "n_words", "nnz")
OFF_CRC_PARAMS, OFF_CRC_STREAM, OFF_CRC_HEADER = 36, 40, 44
SPEC_WORD_BITS = {4: 1 + 3 + 36, 8: 1 + 4 + 72, 16: 1 + 5 + 144}
SPEC_WORD_BYTES = {4: 5, 8: 10, 16: 19}


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def spec_pack_word(end, split, slots, lanes):
    """One stream word: bit 0 end, then split, then slot i = delta (5 b) | code (4 b) << 5."""
    sb = lanes.bit_length()
    assert 0 <= split < (1 << sb)
    word = int(end) | (split << 1)
    for i, (delta, code) in enumerate(slots):
        assert 0 <= delta < 32 and 0 <= code < 16
        word |= (delta | code << 5) << (1 + sb + 9 * i)
    return word


def spec_unpack_word(word, lanes):
    sb = lanes.bit_length()
    slots = [((word >> (1 + sb + 9 * i)) & 31, (word >> (1 + sb + 9 * i + 5)) & 15)
             for i in range(lanes)]
    return bool(word & 1), (word >> 1) & ((1 << sb) - 1), slots


def build_image(*, encoding, lanes, rows, cols, nnz, params: bytes, words, codebook=(0,) * 16,
                version=1, magic=b"NEPW", n_words=None):
    """An image with valid CRCs around whatever content is given."""
    wb = SPEC_WORD_BYTES.get(lanes, 8)
    stream = b"".join(w.to_bytes(wb, "little") for w in words)
    head = struct.pack(HEADER_FMT, magic, version, int(encoding), lanes, rows, cols,
                       len(words) if n_words is None else n_words, nnz, *codebook,
                       crc(params), crc(stream))
    return head + struct.pack("<I", crc(head)) + params + stream


def spec_params(bias, mult, shift) -> bytes:
    return b"".join(struct.pack("<iib", b, m, s) for b, m, s in zip(bias, mult, shift))


def read_header(image: bytes) -> dict:
    vals = struct.unpack_from(HEADER_FMT, image)
    h = dict(zip(HEADER_FIELDS, vals[:8]))
    h["codebook"] = tuple(vals[8:24])
    h["crc_params"], h["crc_stream"] = vals[24:26]
    (h["crc_header"],) = struct.unpack_from("<I", image, OFF_CRC_HEADER)
    return h


def spec_words(image: bytes):
    h = read_header(image)
    wb = SPEC_WORD_BYTES[h["lanes"]]
    s0 = 48 + 9 * h["rows"]
    stream = image[s0:]
    assert len(stream) == wb * h["n_words"]
    return [int.from_bytes(stream[i:i + wb], "little") for i in range(0, len(stream), wb)]


def value_of(codes, encoding, codebook):
    if encoding == Encoding.INT8:
        v = codes[0] << 4 | codes[1]
        return v - 256 if v & 0x80 else v
    if encoding == Encoding.INT4:
        return codes[0] - 16 if codes[0] & 8 else codes[0]
    return codebook[codes[0]]


def walk(image: bytes):
    """Independent decoder that also checks the compressor's canonical form.

    Returns per-row lists of (column, value). Asserts: split rules, one end flag per row,
    strictly increasing columns, low-nibble slots of int8 pairs have delta 0, code-0 slots are
    either padding (delta 0) or escapes (delta 31), and no bits above word_bits are set.
    """
    h = read_header(image)
    enc, lanes = Encoding(h["encoding"]), h["lanes"]
    step = 2 if enc == Encoding.INT8 else 1
    per = lanes // step
    out = [[] for _ in range(h["rows"])]
    r, pos, ends, last_col = 0, 0, 0, -1
    for k, word in enumerate(spec_words(image)):
        assert word >> SPEC_WORD_BITS[lanes] == 0, f"word {k}: padding bits set"
        end, split, slots = spec_unpack_word(word, lanes)
        assert split <= per and (end or split == per), f"word {k}: split {split}"
        for e in range(per):
            if end and e == split:
                r, pos, last_col = r + 1, 0, -1
            pair = slots[e * step:e * step + step]
            delta, codes = pair[0][0], tuple(c for _, c in pair)
            if step == 2:
                assert pair[1][0] == 0, f"word {k}: int8 low slot has delta {pair[1][0]}"
            pos += delta
            if any(codes):
                assert r < h["rows"] and pos < h["cols"]
                assert pos > last_col, f"word {k}: column {pos} not increasing"
                last_col = pos
                out[r].append((pos, value_of(codes, enc, h["codebook"])))
            else:
                assert delta in (0, 31), f"word {k}: code-0 slot with delta {delta}"
        if end and split == per:
            r, pos, last_col = r + 1, 0, -1
        ends += end
    assert ends == r == h["rows"]
    return out


def row_entries(row) -> int:
    """Entries the compressor needs for one row: nonzeros, escapes, 1 for an empty row."""
    cols = np.flatnonzero(row).tolist()
    esc, prev = 0, 0
    for c in cols:
        esc += max(0, (c - prev - 1) // 31)
        prev = c
    return max(1, len(cols) + esc)


def optimal_words(w, per_word) -> int:
    """Fewest words for the entry sequence with at most one row end per word (greedy chunks:
    any sub-chunk of a valid chunk is valid, so maximal chunks are optimal)."""
    is_end = []
    for row in w:
        n = row_entries(row)
        is_end += [False] * (n - 1) + [True]
    words, i, n = 0, 0, len(is_end)
    while i < n:
        j, ends = i, 0
        while j < n and j - i < per_word:
            if is_end[j]:
                if ends:
                    break
                ends += 1
            j += 1
        words, i = words + 1, j
    return words


# ----------------------------------------------------------------- matrices


def random_codebook(rng) -> tuple:
    vals = rng.choice([v for v in range(-128, 128) if v], 15, replace=False)
    return (0, *(int(v) for v in vals))


def random_values(rng, shape, encoding, codebook):
    if encoding == Encoding.INT8:
        v = rng.integers(-128, 127, shape, endpoint=True)
        return np.where(v == 0, -128, v)
    if encoding == Encoding.INT4:
        v = rng.integers(-8, 7, shape, endpoint=True)
        return np.where(v == 0, 7, v)
    return np.asarray(codebook)[rng.integers(1, 15, shape, endpoint=True)]


SPECIAL_ROWS = ["last", "first_last", "every31", "every32", "every62", "at31", "at32",
                "at62", "at63", "at93", "at94", "empty", "dense"]


def special_columns(kind, cols):
    return {
        "last": [cols - 1], "first_last": [0, cols - 1],
        "every31": range(0, cols, 31), "every32": range(0, cols, 32),
        "every62": range(61, cols, 62),
        "at31": [31], "at32": [32], "at62": [62], "at63": [63], "at93": [93], "at94": [94],
        "empty": [], "dense": range(cols),
    }[kind]


def make_matrix(rng, rows, cols, sparsity, encoding, codebook, specials=()):
    vals = random_values(rng, (rows, cols), encoding, codebook)
    mask = rng.random((rows, cols)) >= sparsity
    w = np.where(mask, vals, 0)
    for r, kind in specials:
        if r < rows:
            w[r] = 0
            idx = [c for c in special_columns(kind, cols) if c < cols]
            w[r, idx] = vals[r, idx]
    return w.astype(np.int64)


def random_params(rng, rows):
    bias = rng.integers(I32_MIN, I32_MAX, rows, endpoint=True)
    mult = rng.integers(1 << 30, (1 << 31) - 1, rows, endpoint=True)
    mult[rng.random(rows) < 0.1] = 0
    shift = rng.integers(-31, 7, rows, endpoint=True)
    return bias, mult, shift


@st.composite
def matrices(draw, max_rows=40, max_cols=300):
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.one_of(st.integers(1, max_cols), st.sampled_from([1, 31, 32, 33, 63, 64, 97])))
    encoding = draw(st.sampled_from(list(Encoding)))
    lanes = draw(st.sampled_from(LANE_CHOICES))
    sparsity = draw(st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.97, 0.995, 1.0]),
                              st.floats(0.0, 1.0)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    specials = draw(st.lists(st.tuples(st.integers(0, max_rows - 1),
                                       st.sampled_from(SPECIAL_ROWS)), max_size=6))
    rng = np.random.default_rng(seed)
    codebook = random_codebook(rng) if encoding == Encoding.CODEBOOK else None
    w = make_matrix(rng, rows, cols, sparsity, encoding, codebook, specials)
    return w, encoding, lanes, codebook, rng


def do_compress(w, encoding, lanes, codebook, rng=None):
    rng = rng or np.random.default_rng(0)
    bias, mult, shift = random_params(rng, w.shape[0])
    img = compress(w, bias, mult, shift, encoding=encoding, lanes=lanes, codebook=codebook)
    return img, bias, mult, shift


def check_image(img, w, encoding, lanes, codebook, bias, mult, shift):
    rows, cols = w.shape
    # header, by the spec's offsets
    h = read_header(img)
    assert h["magic"] == b"NEPW" and h["version"] == 1
    assert (h["encoding"], h["lanes"], h["rows"], h["cols"]) == (int(encoding), lanes, rows, cols)
    assert h["nnz"] == np.count_nonzero(w)
    assert h["codebook"] == (tuple(codebook) if codebook is not None else (0,) * 16)
    assert len(img) == 48 + 9 * rows + SPEC_WORD_BYTES[lanes] * h["n_words"]
    assert h["crc_header"] == crc(img[:44])
    assert h["crc_params"] == crc(img[48:48 + 9 * rows])
    assert h["crc_stream"] == crc(img[48 + 9 * rows:])
    assert img[48:48 + 9 * rows] == spec_params(bias.tolist(), mult.tolist(), shift.tolist())
    # the stream, through the independent decoder
    decoded = walk(img)
    for r in range(rows):
        nz = np.flatnonzero(w[r])
        assert decoded[r] == list(zip(nz.tolist(), w[r, nz].tolist()))
    per = lanes // 2 if encoding == Encoding.INT8 else lanes
    total = sum(row_entries(row) for row in w)
    assert h["n_words"] >= max(rows, math.ceil(total / per))
    assert h["n_words"] == optimal_words(w, per)
    # and the module's own decoder
    m = decompress(img)
    assert m.weights.dtype == np.int8 and m.weights.shape == (rows, cols)
    np.testing.assert_array_equal(m.weights, w)
    assert m.bias.tolist() == bias.tolist()
    assert m.multiplier.tolist() == mult.tolist()
    assert m.shift.tolist() == shift.tolist()
    assert m.encoding == encoding
    assert stream_words(img) == spec_words(img)


# ----------------------------------------------------------------- round trips


@given(matrices())
@settings(max_examples=300, deadline=None)
def test_round_trip_random(case):
    w, encoding, lanes, codebook, rng = case
    img, bias, mult, shift = do_compress(w, encoding, lanes, codebook, rng)
    check_image(img, w, encoding, lanes, codebook, bias, mult, shift)


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("lanes", LANE_CHOICES)
@pytest.mark.parametrize("kind", ["zero_1x1", "one_1x1", "all_zero", "dense", "gaps", "one_col"])
def test_round_trip_structured(encoding, lanes, kind):
    rng = np.random.default_rng(hash((int(encoding), lanes, kind)) & 0xFFFF)
    cb = random_codebook(rng) if encoding == Encoding.CODEBOOK else None
    shape = {"zero_1x1": (1, 1), "one_1x1": (1, 1), "one_col": (37, 1)}.get(kind, (40, 300))
    sparsity = {"zero_1x1": 1.0, "all_zero": 1.0, "gaps": 1.0}.get(kind, 0.0)
    specials = [(r, SPECIAL_ROWS[r % len(SPECIAL_ROWS)]) for r in range(40)] if kind == "gaps" \
        else ()
    w = make_matrix(rng, *shape, sparsity, encoding, cb, specials)
    img, bias, mult, shift = do_compress(w, encoding, lanes, cb, rng)
    check_image(img, w, encoding, lanes, cb, bias, mult, shift)
    h = parse_header(img)
    if kind in ("zero_1x1", "all_zero"):
        assert h.nnz == 0 and h.n_words == shape[0]  # one padding entry per row, one end each
    if kind == "dense":
        per = lanes // 2 if encoding == Encoding.INT8 else lanes
        assert h.n_words == math.ceil(40 * 300 / per)  # 300 columns: no escapes, no waste


def test_escapes_for_long_gaps():
    """A lone weight in column c costs floor((c - 1) / 31) escape slots of delta 31."""
    for c, n_esc in ((0, 0), (30, 0), (31, 0), (32, 1), (62, 1), (63, 2), (93, 2), (94, 3),
                     (299, 9)):
        w = np.zeros((1, 300), dtype=np.int64)
        w[0, c] = 5
        img = compress(w, [0], [1 << 30], [0], encoding=Encoding.INT4, lanes=16)
        (word,) = stream_words(img)
        end, split, slots = unpack_word(word, 16)
        assert end and split == n_esc + 1
        assert slots[:n_esc] == [(31, 0)] * n_esc
        assert slots[n_esc] == (c - 31 * n_esc, 5)
        assert slots[n_esc + 1:] == [(0, 0)] * (16 - n_esc - 1)
        assert decompress(img).weights[0, c] == 5


def test_int8_pairs_and_row_split_layout():
    """Two rows in one word: int8 pairs (delta + high nibble, 0 + low nibble), split = 2."""
    w = np.array([[0, 0, -3, 0, 0x5A], [0x12, 0, 0, 0, 0]])
    img = compress(w, [1, 2], [1 << 30] * 2, [0, 0], encoding=Encoding.INT8, lanes=8)
    words = stream_words(img)
    assert len(words) == 2
    assert unpack_word(words[0], 8) == (
        True, 2, [(2, 0xF), (0, 0xD), (2, 0x5), (0, 0xA), (0, 0), (0, 0), (0, 0), (0, 0)])
    # row 1 must end in a later word; its only entry goes there, word 0 is padded
    assert unpack_word(words[1], 8) == (True, 1, [(0, 0x1), (0, 0x2)] + [(0, 0)] * 6)
    np.testing.assert_array_equal(decompress(img).weights, w)


def test_second_row_keeps_last_entry_back():
    w = np.array([[1, 2, 0, 0], [3, 4, 5, 0]])
    img = compress(w, [0, 0], [1 << 30] * 2, [0, 0], encoding=Encoding.INT4, lanes=4)
    words = [unpack_word(x, 4) for x in stream_words(img)]
    assert words == [
        (True, 2, [(0, 1), (1, 2), (0, 3), (1, 4)]),  # row 0 ends at 2; row 1 starts
        (True, 1, [(1, 5), (0, 0), (0, 0), (0, 0)]),  # row 1 ends after one more entry
    ]


@given(st.sampled_from(LANE_CHOICES), st.booleans(), st.data())
@settings(max_examples=60, deadline=None)
def test_word_packing_matches_spec(lanes, end, data):
    split = data.draw(st.integers(0, lanes))
    slots = data.draw(st.lists(st.tuples(st.integers(0, 31), st.integers(0, 15)),
                               min_size=0, max_size=lanes))
    word = pack_word(end, split, slots, lanes)
    padded = slots + [(0, 0)] * (lanes - len(slots))
    assert word == spec_pack_word(end, split, padded, lanes)
    assert word < 1 << SPEC_WORD_BITS[lanes]
    assert unpack_word(word, lanes) == (end, split, padded) == spec_unpack_word(word, lanes)


def test_word_sizes():
    for lanes in LANE_CHOICES:
        assert split_bits(lanes) == lanes.bit_length()
        assert word_bits(lanes) == SPEC_WORD_BITS[lanes]
        assert word_bytes(lanes) == SPEC_WORD_BYTES[lanes]
    assert HEADER_BYTES == 48 and PARAM_BYTES == 9
    assert struct.calcsize(HEADER_FMT) == 44


def test_param_words_layout():
    bias, mult, shift = [-5, I32_MAX, I32_MIN], [1 << 30, 0, (1 << 31) - 1], [-31, 7, 0]
    img = compress(np.ones((3, 4), dtype=np.int64), bias, mult, shift,
                   encoding=Encoding.INT4, lanes=4)
    for rec, b, m, s in zip(param_words(img), bias, mult, shift):
        assert rec < 1 << 72
        assert rec & 0xFFFFFFFF == b & 0xFFFFFFFF
        assert (rec >> 32) & 0xFFFFFFFF == m & 0xFFFFFFFF
        assert rec >> 64 == s & 0xFF


def test_image_matches_independent_builder():
    rng = np.random.default_rng(7)
    cb = random_codebook(rng)
    w = make_matrix(rng, 9, 70, 0.8, Encoding.CODEBOOK, cb, [(2, "empty"), (3, "last")])
    bias, mult, shift = random_params(rng, 9)
    img = compress(w, bias, mult, shift, encoding=Encoding.CODEBOOK, lanes=8, codebook=cb)
    rebuilt = build_image(encoding=Encoding.CODEBOOK, lanes=8, rows=9, cols=70,
                          nnz=int(np.count_nonzero(w)), codebook=cb,
                          params=spec_params(bias.tolist(), mult.tolist(), shift.tolist()),
                          words=spec_words(img))
    assert rebuilt == img


# ----------------------------------------------------------------- malformed images


@pytest.fixture
def good():
    """A small valid image and its parts (two rows, INT4, lanes 4)."""
    w = np.array([[3, 0, 0, -2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 7]])
    params = spec_params([10, -10], [1 << 30, 3 << 29], [0, -2])
    img = compress(w, [10, -10], [1 << 30, 3 << 29], [0, -2], encoding=Encoding.INT4, lanes=4)
    return dict(img=img, w=w, params=params, words=stream_words(img))


def rebuild(good, words, **kw):
    args = dict(encoding=Encoding.INT4, lanes=4, rows=2, cols=7, nnz=3, params=good["params"],
                words=words)
    args.update(kw)
    return build_image(**args)


def test_good_fixture_rebuilds(good):
    assert rebuild(good, good["words"]) == good["img"]
    assert [unpack_word(x, 4) for x in good["words"]] == [
        (True, 2, [(0, 3), (3, 0xE), (0, 0), (0, 0)]),
        (True, 1, [(6, 7), (0, 0), (0, 0), (0, 0)]),
    ]
    np.testing.assert_array_equal(decompress(good["img"]).weights, good["w"])


def flip(img: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(img)
    b[offset] ^= mask
    return bytes(b)


def raises(img, *substrings):
    with pytest.raises(ImageError) as e:
        decompress(img)
    for s in substrings:
        assert s in str(e.value), (s, str(e.value))
    return str(e.value)


def test_bad_magic(good):
    raises(b"XEPW" + good["img"][4:], "not an NEP weight image")


def test_bad_version(good):
    raises(rebuild(good, good["words"], version=2), "unsupported image version 2")
    raises(flip(good["img"], 4), "unsupported image version")  # checked before the CRC


@pytest.mark.parametrize("offset", [6, 8, 10, 12, 16, 20, 35, OFF_CRC_PARAMS, OFF_CRC_STREAM + 3,
                                    OFF_CRC_HEADER, OFF_CRC_HEADER + 3])
def test_header_crc_mismatch(good, offset):
    """Any header byte after the version, the section CRCs and the header CRC itself."""
    raises(flip(good["img"], offset, 0x10), "header CRC mismatch")


def test_truncated_and_padded(good):
    img = good["img"]
    raises(img[:-1], "truncated or padded", f"{len(img) - 1} bytes")
    raises(img[:-5], "truncated or padded")
    raises(img[:HEADER_BYTES], "truncated or padded")
    raises(img + b"\x00", "truncated or padded", f"{len(img) + 1} bytes")
    raises(img[:HEADER_BYTES - 1], "shorter than the 48-byte header")
    raises(b"", "shorter than the 48-byte header")
    # n_words in the header disagreeing with the stream length (with a valid header CRC)
    raises(rebuild(good, good["words"], n_words=len(good["words"]) + 1), "truncated or padded")


def test_not_bytes():
    with pytest.raises(ImageError, match="must be bytes"):
        decompress([1, 2, 3])


def test_param_crc_mismatch(good):
    for off in (HEADER_BYTES, HEADER_BYTES + 9 + 8):
        raises(flip(good["img"], off), "parameter CRC mismatch")


def test_stream_crc_mismatch(good):
    s0 = HEADER_BYTES + 2 * PARAM_BYTES
    for off in (s0, len(good["img"]) - 1):
        raises(flip(good["img"], off, 0x80), "stream CRC mismatch")


def test_header_field_checks(good):
    raises(rebuild(good, good["words"], encoding=3), "unknown value encoding 3")
    raises(rebuild(good, good["words"], lanes=5), "lanes 5 not one of")
    raises(rebuild(good, good["words"], rows=0, params=b""), "empty shape 0x7")
    raises(rebuild(good, good["words"], cols=0), "empty shape 2x0")
    bad_cb = (1,) + tuple(range(2, 17))
    raises(rebuild(good, good["words"], encoding=Encoding.CODEBOOK, codebook=bad_cb),
           "codebook entry 0 must be 0")
    raises(rebuild(good, good["words"], encoding=Encoding.CODEBOOK, codebook=(0, 1, 1) + (0,) * 13),
           "distinct and nonzero")


def test_split_out_of_range(good):
    raises(rebuild(good, [pack_word(True, 5, [(0, 3)], 4)] + good["words"][1:]),
           "word 0: split 5 invalid")
    # int8: a word holds lanes / 2 entries, so split 3..4 is out of range for lanes 4
    params = spec_params([0], [1 << 30], [0])
    img = build_image(encoding=Encoding.INT8, lanes=4, rows=1, cols=4, nnz=1, params=params,
                      words=[pack_word(True, 3, [(0, 1), (0, 2)], 4)])
    raises(img, "split 3 invalid")
    ok = build_image(encoding=Encoding.INT8, lanes=4, rows=1, cols=4, nnz=1, params=params,
                     words=[pack_word(True, 2, [(0, 1), (0, 2)], 4)])
    assert decompress(ok).weights.tolist() == [[0x12, 0, 0, 0]]


def test_split_without_end(good):
    raises(rebuild(good, [pack_word(False, 2, [(0, 3), (3, 0xE)], 4)] + good["words"][1:]),
           "word 0: split 2 invalid (end=False")


def test_column_out_of_range(good):
    words = [pack_word(True, 2, [(0, 3), (7, 0xE)], 4), pack_word(True, 1, [(6, 7)], 4)]
    raises(rebuild(good, words), "word 0: column 7 out of range (cols=7)")
    # escapes (code 0) are checked too
    words = [pack_word(True, 2, [(0, 3), (3, 0xE)], 4),
             pack_word(False, 4, [(6, 0), (1, 0)], 4), pack_word(True, 1, [(0, 7)], 4)]
    raises(rebuild(good, words), "word 1: column 7 out of range")


def test_too_many_rows(good):
    raises(rebuild(good, good["words"] + [pack_word(True, 1, [], 4)]),
           "word 2: the stream goes on after its last row")


def test_extra_padding_word_rejected(good):
    """A word after the last row is an error even when it carries nothing (as in the RTL)."""
    raises(rebuild(good, good["words"] + [pack_word(False, 4, [], 4)]),
           "goes on after its last row")


def test_repeated_column_rejected(good):
    """Delta 0 on a weight after another weight of the row would add two weights at one
    column; the RTL reports COLUMN for it, the golden decoder must refuse it too."""
    words = [pack_word(True, 2, [(0, 3), (0, 5)], 4), pack_word(True, 1, [(0, 0)], 4)]
    raises(rebuild(good, words, nnz=2), "column 0 of row 0 repeated")


def test_first_weight_at_column_zero_after_padding_accepted():
    """Padding (delta 0, code 0) before a row's first weight is not a repeat."""
    w = np.array([[1, 2, 3, 4, 5], [6, 0, 0, 0, 0]])
    img = compress(w, [0, 0], [1 << 30] * 2, [0, 0], encoding=Encoding.INT4, lanes=4)
    np.testing.assert_array_equal(decompress(img).weights, w)


def test_padding_bits_rejected(good):
    # Lanes 4 words are exactly 5 bytes; lanes 8 words (77 bits) have 3 padding bits.
    w8 = compress(good["w"], [10, -10], [1 << 30, 3 << 29], [0, -2], encoding=Encoding.INT4,
                  lanes=8)
    words8 = stream_words(w8)
    words8[0] |= 1 << 79
    img = build_image(encoding=Encoding.INT4, lanes=8, rows=2, cols=7, nnz=3,
                      params=good["params"], words=words8)
    raises(img, "padding bits above bit 77")


def test_int8_low_slot_delta_rejected():
    w = np.array([[100, 0, -100]])
    img = compress(w, [0], [1 << 30], [0], encoding=Encoding.INT8, lanes=4)
    words = stream_words(img)
    words[0] |= 1 << (1 + 3 + 9)  # delta field of slot 1, the low nibble of weight 0
    bad = build_image(encoding=Encoding.INT8, lanes=4, rows=1, cols=3, nnz=2,
                      params=img[HEADER_BYTES:HEADER_BYTES + PARAM_BYTES], words=words)
    raises(bad, "low-nibble slot 1 has a delta")


def test_weights_after_last_row(good):
    last = pack_word(True, 1, [(6, 7), (0, 5)], 4)  # a weight after row 1 ended
    raises(rebuild(good, good["words"][:-1] + [last], nnz=4), "weights after the last row")


def test_too_few_rows(good):
    raises(rebuild(good, good["words"][:-1]), "stream ends 1 rows, header says 2",
           "truncated stream")
    raises(rebuild(good, [pack_word(False, 4, [(0, 3), (3, 0xE)], 4)], nnz=2),
           "stream ends 0 rows")


def test_nnz_mismatch(good):
    raises(rebuild(good, good["words"], nnz=4), "stream holds 3 nonzero weights, header says 4")
    raises(rebuild(good, good["words"], nnz=0), "header says 0")


def test_repacked_valid_variants_accepted(good):
    """Different but legal streams for the same matrix: split 0, an explicit escape of less
    than 31, a row spread over several words with padding."""
    words = [pack_word(False, 4, [(0, 3), (0, 0), (3, 0xE)], 4),
             pack_word(True, 0, [(2, 0), (4, 7)], 4),  # row 0 ends before slot 0
             pack_word(True, 1, [(0, 0)], 4)]  # row 1 ends after a padding entry
    m = decompress(rebuild(good, words))
    np.testing.assert_array_equal(m.weights, [[3, 0, 0, -2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 7]])


# ----------------------------------------------------------------- compressor input checks


def comp(w, *, rows=None, encoding=Encoding.INT4, lanes=8, codebook=None, bias=None, mult=None,
         shift=None):
    w = np.asarray(w)
    n = rows if rows is not None else (w.shape[0] if w.ndim >= 1 else 1)
    return compress(w, np.zeros(n, int) if bias is None else bias,
                    np.full(n, 1 << 30) if mult is None else mult,
                    np.zeros(n, int) if shift is None else shift,
                    encoding=encoding, lanes=lanes, codebook=codebook)


CB = (0, 1, -1, 2, -2, 4, -4, 8, -8, 16, -16, 32, -32, 64, -64, 127)


@pytest.mark.parametrize("call,msg", [
    (lambda: comp([[8]]), "int4 encoding needs weights in -8..7"),
    (lambda: comp([[0, -9]]), "int4 encoding needs weights in -8..7"),
    (lambda: comp([[3, 5]], encoding=Encoding.CODEBOOK, codebook=CB), "not in the codebook"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK, codebook=(5,) + CB[1:]),
     "codebook entry 0 must be 0"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK, codebook=CB[:-1] + (1,)),
     "distinct and nonzero"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK, codebook=CB[:-1] + (0,)),
     "distinct and nonzero"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK, codebook=CB[:-1]), "16 entries"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK, codebook=CB[:-1] + (200,)),
     "entries must be int8"),
    (lambda: comp([[1]], encoding=Encoding.CODEBOOK), "needs a codebook"),
    (lambda: comp([[1]], encoding=Encoding.INT4, codebook=CB), "INT4 encoding takes no codebook"),
    (lambda: comp([[1], [2]], bias=[0]), "bias has shape (1,), expected (2,)"),
    (lambda: comp([[1], [2]], bias=[[0, 0]]), "bias has shape"),
    (lambda: comp([[1], [2]], mult=[1 << 30]), "multiplier has shape"),
    (lambda: comp([[1], [2]], shift=[0, 0, 0]), "shift has shape"),
    (lambda: comp([[1]], bias=[0.5]), "bias must be integers"),
    (lambda: comp([[1]], bias=[1 << 31]), "bias must be int32"),
    (lambda: comp([[1]], mult=[(1 << 30) - 1]), "normalized"),
    (lambda: comp([[1]], mult=[1 << 31]), "normalized"),
    (lambda: comp([[1]], mult=[-(1 << 30)]), "normalized"),
    (lambda: comp([[1]], shift=[8]), "shifts must be in -31..7"),
    (lambda: comp([[1]], shift=[-32]), "shifts must be in -31..7"),
    (lambda: comp([[1]], lanes=5), "lanes must be one of (4, 8, 16)"),
    (lambda: comp([[1]], lanes=32), "lanes must be one of"),
    (lambda: comp([1, 2, 3], rows=1), "non-empty 2-D matrix"),
    (lambda: comp(np.ones((2, 2, 2), int), rows=2), "non-empty 2-D matrix"),
    (lambda: comp(np.ones((0, 3), int), rows=0), "non-empty 2-D matrix"),
    (lambda: comp(np.ones((2, 0), int), rows=2), "non-empty 2-D matrix"),
    (lambda: comp([[200]], encoding=Encoding.INT8), "int8 values"),
    (lambda: comp([[0.5]], encoding=Encoding.INT8), "int8 values"),
    (lambda: comp(np.zeros((1, 65536), int)), "exceeds 65535"),
])
def test_compress_rejects(call, msg):
    with pytest.raises(ImageError) as e:
        call()
    assert msg in str(e.value), str(e.value)


def test_compress_accepts_edges():
    img = comp([[1, -1]], mult=[0], shift=[-31], bias=[I32_MIN])
    assert decompress(img).shift.tolist() == [-31]
    img = comp([[7, -8]], mult=[(1 << 31) - 1], shift=[7], bias=[I32_MAX])
    assert decompress(img).weights.tolist() == [[7, -8]]
    img = comp([[-128, 127]], encoding=Encoding.INT8)
    assert decompress(img).weights.tolist() == [[-128, 127]]
    img = comp([[127, -64, 0]], encoding=Encoding.CODEBOOK, codebook=CB)
    assert decompress(img).codebook == CB
    assert comp(np.zeros((1, 65535), int), lanes=16)  # the largest width


# ----------------------------------------------------------------- golden matvec


def ref_mbqm(x, m, shift):
    """Pure-Python MultiplyByQuantizedMultiplier (see test_numerics.py for its own tests)."""
    left, right = max(shift, 0), max(-shift, 0)
    a = max(I32_MIN, min(I32_MAX, x << left))
    if a == m == I32_MIN:
        h = I32_MAX
    else:
        p = a * m
        s = p + ((1 << 30) if p >= 0 else 1 - (1 << 30))
        h = abs(s) >> 31 if s >= 0 else -(abs(s) >> 31)
    mask = (1 << right) - 1
    return (h >> right) + ((h & mask) > (mask >> 1) + (h < 0))


def ref_matvec(w, x, bias, mult, shift):
    out = []
    for r in range(len(w)):
        acc = sum(int(a) * int(b) for a, b in zip(w[r], x)) + int(bias[r])
        acc = (acc + (1 << 31)) % (1 << 32) - (1 << 31)
        out.append(max(-128, min(127, ref_mbqm(acc, int(mult[r]), int(shift[r])))))
    return out


@given(st.integers(1, 24), st.integers(1, 120), st.integers(0, 2 ** 32 - 1),
       st.sampled_from(["small", "wide", "extreme"]))
@settings(max_examples=80, deadline=None)
def test_matvec_matches_big_int(rows, cols, seed, bias_kind):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 127, (rows, cols), endpoint=True)
    w[rng.random((rows, cols)) < rng.random()] = 0
    x = rng.integers(-128, 127, cols, endpoint=True)
    bias, mult, shift = random_params(rng, rows)
    if bias_kind == "small":
        bias = rng.integers(-5000, 5000, rows)
        shift = rng.integers(-12, 2, rows)
    elif bias_kind == "extreme":
        bias = rng.choice([I32_MIN, I32_MAX, I32_MIN + 1, I32_MAX - 1], rows)
    got = matvec(w, x, bias, mult, shift)
    assert got.dtype == np.int8
    assert got.tolist() == ref_matvec(w.tolist(), x.tolist(), bias, mult, shift)
    # the same through a compressed image
    img = compress(w, bias, mult, shift, encoding=Encoding.INT8, lanes=8)
    m = decompress(img)
    assert matvec(m.weights, x, m.bias, m.multiplier, m.shift).tolist() == got.tolist()


def test_matvec_wraps_int32():
    w = np.array([[127, 127], [-128, 127]])
    x = np.array([127, 127])
    bias = np.array([I32_MAX - 100, I32_MIN + 5])
    mult, shift = np.array([1 << 30, 1 << 30]), np.array([-24, -24])
    got = matvec(w, x, bias, mult, shift).tolist()
    # row 0: 2**31 - 1 - 100 + 32258 wraps to about -2**31: * 2**-25 -> -64
    # row 1: -2**31 + 5 - 127 wraps to 2**31 - 122: * 2**-25 -> 64
    assert got == ref_matvec(w.tolist(), x.tolist(), bias, mult, shift) == [-64, 64]
    # without the wrap row 0 would be +64
    assert round((I32_MAX - 100 + 2 * 127 * 127) * 2.0 ** -25) == 64


# ----------------------------------------------------------------- bits per weight


def sparse_4bit(rng, n, sparsity, encoding):
    k = n * n - round(sparsity * n * n)
    w = np.zeros(n * n, dtype=np.int64)
    idx = rng.choice(n * n, k, replace=False)
    if encoding == Encoding.INT4:
        v = rng.integers(-8, 7, k, endpoint=True)
        w[idx] = np.where(v == 0, 1, v)
    else:
        w[idx] = np.asarray(CB)[rng.integers(1, 15, k, endpoint=True)]
    return w.reshape(n, n)


@pytest.mark.parametrize("n", [256, 1024])
@pytest.mark.parametrize("encoding", [Encoding.INT4, Encoding.CODEBOOK])
def test_bits_per_weight_goal(n, encoding):
    """Product goal: 4-bit weights at 90% sparsity cost <= 1.5 bits per weight, all in."""
    rng = np.random.default_rng(n)
    w = sparse_4bit(rng, n, 0.9, encoding)
    cb = CB if encoding == Encoding.CODEBOOK else None
    img = compress(w, np.zeros(n, int), np.full(n, 1 << 30), np.zeros(n, int),
                   encoding=encoding, lanes=8, codebook=cb)
    bpw = image_bits_per_weight(img)
    assert bpw == 8 * len(img) / (n * n)
    assert bpw <= 1.5
    # and close to the model in docs/weight-format.md: 10 bits per slot (lanes 8), slots per
    # nonzero 1 + q**31 / (1 - q**31), 72 bits per row, the 48-byte header
    d, q = 0.1, 0.9
    model = d * (1 + q ** 31 / (1 - q ** 31)) * 10 + 72 / n + 384 / (n * n)
    assert abs(bpw - model) / model < 0.02, (bpw, model)
    h = parse_header(img)
    assert h.nnz == round(0.1 * n * n)


def test_bits_per_weight_int8_dense_and_empty():
    n = 64
    w = np.ones((n, n), dtype=np.int64)
    img = compress(w, np.zeros(n, int), np.full(n, 1 << 30), np.zeros(n, int),
                   encoding=Encoding.INT8, lanes=8)
    # dense int8: 2 slots per weight, 4 weights per 10-byte word -> 20 bits, + params + header
    assert image_bits_per_weight(img) == pytest.approx(20 + 72 / n + 384 / n ** 2)
    empty = compress(np.zeros((n, n), int), np.zeros(n, int), np.full(n, 1 << 30),
                     np.zeros(n, int), encoding=Encoding.INT4, lanes=8)
    assert len(empty) == 48 + n * 9 + n * 10
    assert image_bits_per_weight(empty) == Fraction(8 * len(empty), n * n)
