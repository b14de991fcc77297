"""Compiler: a quantized golden model -> one NEP processor image.

The image (``docs/isa.md``, "Image file") holds everything the host loads into the
processor: layer descriptors, program words (one program per compute step), compressed
weight stream words, 72-bit row parameter records, the requantization constant table and
the scratchpad's initial contents (the embedding table), plus a JSON memory map telling
the host where each program starts and where each input and output lives.

Layers are compressed with :func:`golden.weights.compress` unchanged, except that a
fused LSTM's gate rows are interleaved (``i, f, g, o`` of unit 0, then unit 1, ...) so
the LSTM cell unit receives each unit's four gates together (``Mode.LSTM``).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from golden.model import QuantModel, layer_specs
from golden.weights import (
    Encoding,
    compress,
    param_words,
    parse_header,
    stream_words,
    word_bytes,
)

from .isa import (
    DESCRIPTOR_BYTES,
    Descriptor,
    Instruction,
    IsaError,
    Mode,
    Op,
    ProcessorConfig,
    encode,
    pack_constant,
    unpack_constant,
)

__all__ = [
    "IMAGE_MAGIC",
    "IMAGE_VERSION",
    "PROGRAMS",
    "CompileError",
    "Image",
    "ImageFormatError",
    "Region",
    "compile_model",
    "load_image",
    "memory_summary",
]

#: Programs of an image, in program-memory order (the golden Backend's step names).
PROGRAMS = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")
IMAGE_MAGIC = b"NEPI"
IMAGE_VERSION = 1
_ENCODINGS = {"int8": Encoding.INT8, "int4": Encoding.INT4, "codebook4": Encoding.CODEBOOK}
_LSTMS = {"fast.lstm": "fast", "slow.lstm1": "slow1", "slow.lstm2": "slow2",
          "pred.lstm": "pred"}


class CompileError(ValueError):
    """The model cannot be compiled for the configuration (it does not fit)."""


class ImageFormatError(ValueError):
    """An image file is corrupt, truncated, padded or of an unknown version."""


@dataclass(frozen=True)
class Region:
    """A named scratchpad range: ``length`` 16-bit entries from ``addr``.

    ``kind`` says who writes it: ``in`` (the host, before a step), ``out`` (a program,
    read by the host after), ``state`` (kept on chip between steps), ``temp`` or
    ``const`` (initialized from the image).
    """

    name: str
    addr: int
    length: int
    kind: str

    @property
    def end(self) -> int:
        return self.addr + self.length


@dataclass(frozen=True, eq=False)
class Image:
    """A compiled processor image (what :func:`load_image` returns, too).

    Attributes
    ----------
    config : ProcessorConfig
    descriptors : tuple of Descriptor
    program : tuple of int
        64-bit instruction words, loaded at address 0; ``PROG_LEN = len(program)``.
    weights : tuple of int
        Stream words, loaded at weight address 0.
    params : tuple of int
        72-bit row records, loaded at parameter address 0.
    constants : tuple of int
        64-bit constant-table words (:func:`~compiler.isa.pack_constant`).
    scratch_init : tuple of (int, ndarray)
        Scratch segments ``(addr, int16 values)`` the host writes at load time.
    memory_map : dict
        JSON-ready: ``programs`` (name -> ``{"addr", "length"}``), ``regions``
        (name -> ``{"addr", "length", "kind"}``), ``layers`` (name -> descriptor index
        and placement), ``constants`` and ``model`` (vocabulary, scales, configs).
    """

    config: ProcessorConfig
    descriptors: tuple
    program: tuple
    weights: tuple
    params: tuple
    constants: tuple
    scratch_init: tuple
    memory_map: dict = field(repr=False)

    def region(self, name: str) -> Region:
        r = self.memory_map["regions"][name]
        return Region(name, r["addr"], r["length"], r["kind"])

    def entry(self, program: str) -> int:
        """Start address of ``program``."""
        return self.memory_map["programs"][program]["addr"]

    def to_bytes(self) -> bytes:
        """The image file (``docs/isa.md``, "Image file")."""
        c = self.config
        wb = word_bytes(c.lanes)
        mm = json.dumps(self.memory_map, sort_keys=True).encode("utf-8")
        scratch = b"".join(struct.pack("<II", a, len(v)) + np.asarray(v, "<i2").tobytes()
                           for a, v in self.scratch_init)
        sections = [
            (_S_CONFIG, 1, _CONFIG.pack(*(getattr(c, f) for f in _CONFIG_FIELDS))),
            (_S_MEMMAP, 1, mm),
            (_S_DESCRIPTORS, len(self.descriptors),
             b"".join(d.pack() for d in self.descriptors)),
            (_S_PROGRAM, len(self.program), b"".join(struct.pack("<Q", w) for w in self.program)),
            (_S_WEIGHTS, len(self.weights), b"".join(w.to_bytes(wb, "little")
                                                    for w in self.weights)),
            (_S_PARAMS, len(self.params), b"".join(p.to_bytes(9, "little") for p in self.params)),
            (_S_CONSTANTS, len(self.constants),
             b"".join(struct.pack("<Q", k) for k in self.constants)),
            (_S_SCRATCH, len(self.scratch_init), scratch),
        ]
        head = _HEAD.size + _DIR.size * len(sections)
        total = head + sum(len(s[2]) for s in sections) + 4
        out = bytearray(_HEAD.pack(IMAGE_MAGIC, IMAGE_VERSION, len(sections), total))
        off = head
        for tag, count, payload in sections:
            out += _DIR.pack(tag, 0, off, len(payload), count)
            off += len(payload)
        for _, _, payload in sections:
            out += payload
        out += struct.pack("<I", zlib.crc32(bytes(out)) & 0xFFFFFFFF)
        return bytes(out)


# ---------------------------------------------------------------------------- file format

_HEAD = struct.Struct("<4sHHI")  # magic, version, sections, total length
_DIR = struct.Struct("<HHIII")  # tag, reserved, offset, length, count
_CONFIG_FIELDS = ("lanes", "program_depth", "weight_depth", "param_depth", "scratch_depth",
                  "desc_depth", "const_depth", "max_rows", "max_cols")
_CONFIG = struct.Struct("<" + "I" * len(_CONFIG_FIELDS))
(_S_CONFIG, _S_MEMMAP, _S_DESCRIPTORS, _S_PROGRAM, _S_WEIGHTS, _S_PARAMS, _S_CONSTANTS,
 _S_SCRATCH) = range(1, 9)
_SECTION_NAMES = {_S_CONFIG: "config", _S_MEMMAP: "memory map", _S_DESCRIPTORS: "descriptors",
                  _S_PROGRAM: "program", _S_WEIGHTS: "weights", _S_PARAMS: "params",
                  _S_CONSTANTS: "constants", _S_SCRATCH: "scratch"}


def load_image(data: bytes) -> Image:
    """Parse and check an image file.

    Raises
    ------
    ImageFormatError
        Naming the problem: not an image (magic), unsupported version, truncated or
        padded (length), CRC mismatch, a missing, repeated or misshapen section, a
        configuration or count out of range, a bad memory map or scratch segment.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageFormatError(f"image must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEAD.size + 4:
        raise ImageFormatError(f"image is {len(data)} bytes: truncated (shorter than its "
                               "header)")
    magic, version, n_sections, total = _HEAD.unpack_from(data)
    if magic != IMAGE_MAGIC:
        raise ImageFormatError(f"not an NEP processor image (magic {magic!r}, expected "
                               f"{IMAGE_MAGIC!r})")
    if version != IMAGE_VERSION:
        raise ImageFormatError(f"unsupported image version {version} (this build reads "
                               f"{IMAGE_VERSION})")
    if total != len(data):
        what = "truncated" if len(data) < total else "padded"
        raise ImageFormatError(f"image is {len(data)} bytes but its header says {total}: "
                               f"{what}")
    (crc,) = struct.unpack_from("<I", data, total - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise ImageFormatError("image CRC mismatch: the file is corrupt")
    head = _HEAD.size + _DIR.size * n_sections
    if head > total - 4:
        raise ImageFormatError(f"section directory of {n_sections} entries overruns the image")
    secs = {}
    for i in range(n_sections):
        tag, _, off, length, count = _DIR.unpack_from(data, _HEAD.size + _DIR.size * i)
        if tag not in _SECTION_NAMES:
            raise ImageFormatError(f"unknown section tag {tag}")
        if tag in secs:
            raise ImageFormatError(f"section {_SECTION_NAMES[tag]} appears twice")
        if off < head or off + length > total - 4:
            raise ImageFormatError(f"section {_SECTION_NAMES[tag]} lies outside the image")
        secs[tag] = (data[off:off + length], count)
    missing = [n for t, n in _SECTION_NAMES.items() if t not in secs]
    if missing:
        raise ImageFormatError(f"missing sections: {', '.join(missing)}")

    def records(tag, size):
        payload, count = secs[tag]
        if len(payload) != count * size:
            raise ImageFormatError(f"section {_SECTION_NAMES[tag]}: {len(payload)} bytes for "
                                   f"{count} records of {size} bytes")
        return [payload[i * size:(i + 1) * size] for i in range(count)]

    (raw_config,) = records(_S_CONFIG, _CONFIG.size)
    try:
        config = ProcessorConfig(**dict(zip(_CONFIG_FIELDS, _CONFIG.unpack(raw_config))))
    except ValueError as e:
        raise ImageFormatError(f"bad processor configuration: {e}") from None
    try:
        memory_map = json.loads(secs[_S_MEMMAP][0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ImageFormatError(f"memory map is not UTF-8 JSON: {e}") from None
    try:
        descriptors = tuple(Descriptor.unpack(r) for r in records(_S_DESCRIPTORS,
                                                                 DESCRIPTOR_BYTES))
    except IsaError as e:
        raise ImageFormatError(str(e)) from None
    program = tuple(struct.unpack("<Q", r)[0] for r in records(_S_PROGRAM, 8))
    wb = word_bytes(config.lanes)
    weights = tuple(int.from_bytes(r, "little") for r in records(_S_WEIGHTS, wb))
    if any(w >> config.word_bits for w in weights):
        raise ImageFormatError(f"weight words have bits set above bit {config.word_bits}")
    params = tuple(int.from_bytes(r, "little") for r in records(_S_PARAMS, 9))
    constants = tuple(struct.unpack("<Q", r)[0] for r in records(_S_CONSTANTS, 8))
    for name, n, depth in (("program", len(program), config.program_depth),
                           ("weights", len(weights), config.weight_depth),
                           ("params", len(params), config.param_depth),
                           ("descriptors", len(descriptors), config.desc_depth),
                           ("constants", len(constants), config.const_depth)):
        if n > depth:
            raise ImageFormatError(f"section {name} holds {n} entries; the configured "
                                   f"memory holds {depth}")
    payload, count = secs[_S_SCRATCH]
    scratch, pos = [], 0
    for _ in range(count):
        if pos + 8 > len(payload):
            raise ImageFormatError("scratch section truncated")
        addr, n = struct.unpack_from("<II", payload, pos)
        pos += 8
        if pos + 2 * n > len(payload) or addr + n > config.scratch_depth:
            raise ImageFormatError(f"scratch segment at {addr} of {n} entries does not fit")
        scratch.append((addr, np.frombuffer(payload, "<i2", n, pos).astype(np.int16)))
        pos += 2 * n
    if pos != len(payload):
        raise ImageFormatError("scratch section has trailing bytes")
    for key in ("programs", "regions", "layers", "model"):
        if not isinstance(memory_map, dict) or key not in memory_map:
            raise ImageFormatError(f"memory map has no {key!r}")
    return Image(config, descriptors, program, weights, params, constants, tuple(scratch),
                 memory_map)


# ---------------------------------------------------------------------------- compiler


def _interleave_gates(hidden: int) -> np.ndarray:
    """Row order ``i0 f0 g0 o0 i1 ...`` taken from the golden ``i.. f.. g.. o..`` order."""
    return np.array([g * hidden + j for j in range(hidden) for g in range(4)])


class _Scratch:
    """Bump allocator of named scratch regions."""

    def __init__(self):
        self.regions: dict[str, Region] = {}
        self.top = 0

    def add(self, name: str, length: int, kind: str) -> Region:
        r = Region(name, self.top, length, kind)
        self.regions[name] = r
        self.top += length
        return r


def compile_model(model: QuantModel, config: ProcessorConfig | None = None, *,
                  fuse_lstm: bool = True) -> Image:
    """Compile ``model`` into one processor image.

    Parameters
    ----------
    model : golden.model.QuantModel
    config : ProcessorConfig, optional
        Memory sizes and lanes (default ``ProcessorConfig()``).
    fuse_lstm : bool
        Run each LSTM layer step as one ``LSTM`` instruction (gate rows interleaved, the
        cell update in the LSTM cell unit, overlapped with the matrix product). False
        emits the equivalent ``MATVEC`` (Q3.12 gates) and element-wise sequence.

    Raises
    ------
    CompileError
        If the model does not fit: the message names each memory or buffer that is too
        small, with the size needed and the size configured.
    """
    if not isinstance(model, QuantModel):
        raise TypeError(f"compile_model needs a QuantModel, got {type(model).__name__}")
    config = ProcessorConfig() if config is None else config
    if not isinstance(config, ProcessorConfig):
        raise TypeError(f"config must be a ProcessorConfig, got {type(config).__name__}")
    mc = model.config
    specs = layer_specs(mc)
    encoding = _ENCODINGS[mc.quant.weight_encoding]
    n = mc.quant.cell_frac_bits

    # Scratch layout: host inputs, per-step outputs, on-chip state, temporaries, tables.
    sc = _Scratch()
    sc.add("feat", mc.feature_dim, "in")
    sc.add("backlog", 1, "in")
    sc.add("token", 1, "in")
    sc.add("arb.hidden", mc.arbitrator_hidden, "temp")
    sc.add("arb.logits", 2, "out")
    sc.add("arb.result", 1, "out")
    for layer, prefix in _LSTMS.items():
        hidden = specs[layer].rows // 4
        sc.add(f"{prefix}.h", hidden, "state")  # h then c: the LSTM instruction's state
        sc.add(f"{prefix}.c", hidden, "state")
    sc.add("enc", mc.enc_dim, "out")
    sc.add("pred.embed", mc.pred_embed, "temp")
    sc.add("joint.hidden", mc.joint_dim, "temp")
    sc.add("logits", mc.vocab_size, "out")
    sc.add("joint.result", 1, "out")
    if not fuse_lstm:
        sc.add("gates", max(specs[layer].rows for layer in _LSTMS), "temp")
    table = sc.add("embed.table", mc.vocab_size * mc.pred_embed, "const")

    # Weights, parameters, descriptors, constants.
    descriptors, weights, params, constants, layers = [], [], [], [], {}
    for name, s in specs.items():
        lay = model.layers[name]
        lin = lay.gates if s.kind == "lstm" else lay
        w, b, m, sh = lin.weight, lin.bias, lin.multiplier, lin.shift
        fused = s.kind == "lstm" and fuse_lstm
        if fused:
            order = _interleave_gates(s.rows // 4)
            w, b, m, sh = w[order], b[order], m[order], sh[order]
        codebook = (model.tensors[f"{name}.codebook"] if encoding == Encoding.CODEBOOK
                    else None)
        img = compress(w, b, m, sh, encoding=encoding, lanes=config.lanes, codebook=codebook)
        h = parse_header(img)
        const_index = cell = 0
        if s.kind == "lstm":
            mode = Mode.LSTM if fused else Mode.Q3_12
            k = pack_constant(lay.out_multiplier, lay.out_shift)
            if k not in constants:
                constants.append(k)
            const_index, cell = constants.index(k), n
        elif s.relu:
            mode = Mode.INT8_RELU
        elif name == "joint.hidden":
            mode = Mode.Q3_12  # tanh joint: Q3.12 into the tanh table
        else:
            mode = Mode.INT8
        split = s.inputs[0][1] if len(s.inputs) == 2 else s.cols
        desc = Descriptor(stream_base=len(weights), n_words=h.n_words, param_base=len(params),
                          nnz=h.nnz, crc_stream=h.crc_stream, crc_params=h.crc_params,
                          rows=h.rows, cols=h.cols, split=split, encoding=int(h.encoding),
                          mode=int(mode), const_index=const_index, cell_frac_bits=cell,
                          codebook=h.codebook)
        layers[name] = {"descriptor": len(descriptors), "weight_base": len(weights),
                        "words": h.n_words, "param_base": len(params), "rows": h.rows,
                        "cols": h.cols, "nnz": h.nnz, "encoding": h.encoding.name,
                        "mode": mode.name, "const_index": const_index}
        descriptors.append(desc)
        weights += stream_words(img)
        params += param_words(img)

    programs = _programs(mc, sc.regions, layers, fuse_lstm, n)
    program, entries = [], {}
    for p in PROGRAMS:
        entries[p] = {"addr": len(program), "length": len(programs[p])}
        program += [encode(i) for i in programs[p]]

    _check_fit(config, mc, specs, program, weights, params, sc.top, descriptors, constants)
    regions = {r.name: {"addr": r.addr, "length": r.length, "kind": r.kind}
               for r in sc.regions.values()}
    memory_map = {
        "programs": entries,
        "regions": regions,
        "layers": layers,
        "constants": [list(unpack_constant(k)) for k in constants],
        "scratch_used": sc.top,
        "fuse_lstm": fuse_lstm,
        "model": {"config": mc.to_dict(), "logit_scale": model.logit_scale,
                  "feature_scale": model.feature_scale},
    }
    table_init = model.embed.table.astype(np.int16).reshape(-1)
    return Image(config, tuple(descriptors), tuple(program), tuple(weights), tuple(params),
                 tuple(constants), ((table.addr, table_init),), memory_map)


def _check_fit(config, mc, specs, program, weights, params, scratch, descriptors, constants):
    problems = []
    for what, need, have, unit in (
            ("program memory", len(program), config.program_depth, "64-bit words"),
            ("weight memory", len(weights), config.weight_depth,
             f"{config.word_bits}-bit stream words"),
            ("parameter memory", len(params), config.param_depth, "72-bit row records"),
            ("scratchpad", scratch, config.scratch_depth, "16-bit entries"),
            ("descriptor table", len(descriptors), config.desc_depth, "descriptors"),
            ("constant table", len(constants), config.const_depth, "constants")):
        if need > have:
            problems.append(f"{what}: the model needs {need} {unit}, the processor has "
                            f"{have}")
    for s in specs.values():
        if s.cols > config.max_cols:
            problems.append(f"activation buffer: layer {s.name} has {s.cols} columns, "
                            f"max_cols is {config.max_cols}")
        if s.rows > config.max_rows:
            problems.append(f"engine rows: layer {s.name} has {s.rows} rows, max_rows is "
                            f"{config.max_rows}")
    if mc.vocab_size > 0xFFFF:
        problems.append(f"LOADROW: vocabulary of {mc.vocab_size} exceeds 65535 rows")
    if problems:
        raise CompileError("model does not fit the processor: " + "; ".join(problems))


def _programs(mc, regions, layers, fuse_lstm: bool, cell_frac_bits: int) -> dict:
    """The instruction list of each compute step (``docs/isa.md``, "Programs")."""
    R = {k: v.addr for k, v in regions.items()}
    D = {k: v["descriptor"] for k, v in layers.items()}

    def matvec(layer, dst, a, b=0):
        return [Instruction(Op.MATVEC, D[layer], dst, a, b)]

    def lstm(layer, x, prefix):
        h = layers[layer]["rows"] // 4
        if fuse_lstm:
            return [Instruction(Op.LSTM, D[layer], R[f"{prefix}.h"], x)]
        return _unfused_lstm(D[layer], x, R[f"{prefix}.h"], R[f"{prefix}.c"], R["gates"], h,
                             layers, layer, cell_frac_bits)

    halt = [Instruction(Op.HALT)]
    progs = {
        "arbitrate": matvec("arb.hidden", R["arb.hidden"], R["feat"], R["backlog"])
        + matvec("arb.out", R["arb.logits"], R["arb.hidden"])
        + [Instruction(Op.SETVL, a=2), Instruction(Op.ARGMAX, d=R["arb.result"],
                                                   a=R["arb.logits"])] + halt,
        "encoder_fast": lstm("fast.lstm", R["feat"], "fast")
        + matvec("fast.proj", R["enc"], R["fast.h"]) + halt,
        "encoder_slow": lstm("slow.lstm1", R["feat"], "slow1")
        + lstm("slow.lstm2", R["slow1.h"], "slow2")
        + matvec("slow.proj", R["enc"], R["slow2.h"]) + halt,
        "predictor": [Instruction(Op.SETVL, a=mc.pred_embed, b=mc.vocab_size),
                      Instruction(Op.LOADROW, d=R["pred.embed"], a=R["embed.table"],
                                  b=R["token"])]
        + lstm("pred.lstm", R["pred.embed"], "pred") + halt,
    }
    joint = matvec("joint.hidden", R["joint.hidden"], R["enc"], R["pred.h"])
    if mc.joint_activation == "tanh":
        jh = R["joint.hidden"]
        joint += [Instruction(Op.SETVL, a=mc.joint_dim),
                  Instruction(Op.TANH, d=jh, a=jh),
                  # q15_to_int8: sat8(RDBPOT(t, 8))
                  Instruction(Op.VSHIFT, p=0x20 | 0x40 | 8, d=jh, a=jh)]
    joint += matvec("joint.out", R["logits"], R["joint.hidden"])
    joint += [Instruction(Op.SETVL, a=mc.vocab_size),
              Instruction(Op.ARGMAX, d=R["joint.result"], a=R["logits"])] + halt
    progs["joint"] = joint
    return progs


def _unfused_lstm(desc, x, h_addr, c_addr, g_addr, hidden, layers, layer, n) -> list:
    """One LSTM step as MATVEC (Q3.12 gates, golden row order) + element-wise ops."""
    H = hidden
    gi, gf, gg, go = g_addr, g_addr + H, g_addr + 2 * H, g_addr + 3 * H
    code = [Instruction(Op.MATVEC, desc, g_addr, x, h_addr),
            Instruction(Op.SETVL, a=2 * H),
            Instruction(Op.SIGMOID, d=gi, a=gi),  # i and f
            Instruction(Op.SETVL, a=H),
            Instruction(Op.TANH, d=gg, a=gg),
            Instruction(Op.SIGMOID, d=go, a=go),
            Instruction(Op.VMUL, p=15, d=c_addr, a=c_addr, b=gf),  # f * c -> Qn
            Instruction(Op.VMUL, p=30 - n, d=gi, a=gi, b=gg),  # i * g -> Qn
            Instruction(Op.VADD, d=c_addr, a=c_addr, b=gi)]  # c' = sat16(fc + ig)
    t_in = c_addr
    if n != 12:  # cell to Q3.12, into g's slot (free now)
        p = (12 - n) if n < 12 else (0x20 | (n - 12))
        code.append(Instruction(Op.VSHIFT, p=p, d=gg, a=c_addr))
        t_in = gg
    code += [Instruction(Op.TANH, d=gg, a=t_in),
             Instruction(Op.VMULQ8, p=layers[layer]["const_index"], d=h_addr, a=go, b=gg)]
    return code


def memory_summary(image: Image) -> str:
    """A human-readable memory map: sizes used and free, regions, programs, layers."""
    c, mm = image.config, image.memory_map
    wbits = c.word_bits
    lines = [f"NEP image v{IMAGE_VERSION}: lanes={c.lanes}, fused LSTM={mm['fuse_lstm']}",
             "", f"{'memory':<18}{'used':>10}{'size':>10}{'width':>8}{'bytes used':>12}"]
    for name, used, size, width in (
            ("program", len(image.program), c.program_depth, 64),
            ("weights", len(image.weights), c.weight_depth, wbits),
            ("params", len(image.params), c.param_depth, 72),
            ("scratch", mm["scratch_used"], c.scratch_depth, 16),
            ("descriptors", len(image.descriptors), c.desc_depth, 512),
            ("constants", len(image.constants), c.const_depth, 64)):
        lines.append(f"{name:<18}{used:>10}{size:>10}{width:>8}"
                     f"{(used * width + 7) // 8:>12}")
    lines += ["", f"{'program':<14}{'addr':>6}{'instrs':>8}"]
    for p, e in sorted(mm["programs"].items(), key=lambda kv: kv[1]["addr"]):
        lines.append(f"{p:<14}{e['addr']:>6}{e['length']:>8}")
    lines += ["", f"{'layer':<14}{'desc':>5}{'rows':>6}{'cols':>6}{'nnz':>9}{'words':>9}"
              f"{'wbase':>9}  mode"]
    for name, lay in sorted(mm["layers"].items(), key=lambda kv: kv[1]["descriptor"]):
        lines.append(f"{name:<14}{lay['descriptor']:>5}{lay['rows']:>6}{lay['cols']:>6}"
                     f"{lay['nnz']:>9}{lay['words']:>9}{lay['weight_base']:>9}  {lay['mode']}")
    lines += ["", f"{'scratch region':<16}{'addr':>7}{'len':>7}  kind"]
    for name, r in sorted(mm["regions"].items(), key=lambda kv: kv[1]["addr"]):
        lines.append(f"{name:<16}{r['addr']:>7}{r['length']:>7}  {r['kind']}")
    return "\n".join(lines)
