"""The NEP host register map as data: registers, memory windows and address decoding.

``docs/register-map.md`` explains the semantics; its tables are this module's
``RegisterMap().markdown()`` (``python -m hw.register_map`` prints them, a unit test keeps
the document in step). Every bus word is 32 bits; a memory word wider than that is
exposed as 32-bit *parts*, part ``k`` holding bits ``32k .. 32k+31`` of the little-endian
word, at a power-of-two stride so that decoding is bit slicing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from compiler.isa import ProcessorConfig
from golden.weights import PARAM_BYTES

__all__ = ["ADDR_WIDTH", "MAP_ID", "Access", "Field", "Location", "Register", "RegisterMap",
           "Window"]

#: Byte address width of the host bus: the map spans 64 MiB.
ADDR_WIDTH = 26
#: ``ID`` register value: ASCII "NEP" and the map version (1).
MAP_ID = 0x4E455001
#: The register block: offsets ``0x000 .. 0xFFF``.
REG_SPAN = 0x1000
#: Largest weight/param memory the bus reaches (the engine's 2**20-word address range).
MAX_STREAM_DEPTH = 1 << 20

#: Window placement, fixed whatever the configuration so host software need not change
#: with memory sizes: (base, reserved bytes, architectural maximum of words).
WINDOW_LAYOUT = {
    "constants": (0x000_1000, 0x800, 256),  # 256 x 8 B
    "descriptors": (0x000_4000, 0x4000, 256),  # 256 x 64 B
    "scratch": (0x004_0000, 0x4_0000, 1 << 16),  # 65536 x 4 B
    "program": (0x008_0000, 0x8_0000, 1 << 16),  # 65536 x 8 B
    "params": (0x100_0000, 0x100_0000, MAX_STREAM_DEPTH),  # 2**20 x 16 B
    "weights": (0x200_0000, 0x200_0000, MAX_STREAM_DEPTH),  # 2**20 x 32 B (16 lanes)
}


class Access(str, Enum):
    """Host access to a register."""

    RO = "RO"  # writes are refused (SLVERR)
    RW = "RW"
    WO = "WO"  # reads return 0
    RW1C = "RW1C"  # writing 1 to a bit clears it; 0 leaves it


@dataclass(frozen=True)
class Field:
    """A named bit field of a register."""

    name: str
    lsb: int
    width: int
    doc: str


@dataclass(frozen=True)
class Register:
    """One 32-bit bus register; bits at and above ``width`` read 0 and ignore writes."""

    name: str
    offset: int
    width: int
    access: Access
    reset: int
    doc: str
    fields: tuple[Field, ...] = ()

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


@dataclass(frozen=True)
class Window:
    """A memory seen through the bus: ``depth`` words of ``word_bits`` bits at ``base``.

    Word ``i``'s part ``k`` is at ``base + i * stride + 4 * k``. Parts at and above
    ``parts`` and words at and above ``depth`` (up to ``span``) are unmapped.
    """

    name: str
    base: int
    span: int
    depth: int
    word_bits: int
    doc: str

    @property
    def parts(self) -> int:
        """32-bit parts per word."""
        return -(-self.word_bits // 32)

    @property
    def stride(self) -> int:
        """Bytes from one word to the next: the parts rounded up to a power of two."""
        return 4 << (self.parts - 1).bit_length()

    def split(self, word: int) -> list[int]:
        """The 32-bit parts of ``word``, part 0 first (the order to write them in)."""
        if not 0 <= word < 1 << self.word_bits:
            raise ValueError(f"{self.name}: 0x{word:x} is not a {self.word_bits}-bit word")
        return [word >> (32 * k) & 0xFFFF_FFFF for k in range(self.parts)]

    def join(self, parts) -> int:
        """The word read back as ``parts`` (part 0 first)."""
        return sum(p << (32 * k) for k, p in enumerate(parts)) & ((1 << self.word_bits) - 1)


class Location(NamedTuple):
    """Where a bus address lands: a register (``index`` and ``part`` 0) or a word part."""

    region: str
    index: int
    part: int


def _registers(cfg: ProcessorConfig) -> tuple[Register, ...]:
    R = Register
    irq_fields = (Field("done", 0, 1, "a run ended (HALT or error)"),
                  Field("error", 1, 1, "a run ended with ERROR != 0"))
    config = [
        ("LANES", 5, cfg.lanes, "MAC lanes L"),
        ("WORD_BITS", 8, cfg.word_bits, "bits per weight stream word"),
        ("PROGRAM_DEPTH", 17, cfg.program_depth, "program memory words"),
        ("DESC_DEPTH", 9, cfg.desc_depth, "descriptor table entries"),
        ("CONST_DEPTH", 9, cfg.const_depth, "constant table entries"),
        ("SCRATCH_DEPTH", 17, cfg.scratch_depth, "scratchpad entries"),
        ("WEIGHT_DEPTH", 21, cfg.weight_depth, "weight memory words"),
        ("PARAM_DEPTH", 21, cfg.param_depth, "param memory records"),
        ("MAX_ROWS", 16, cfg.max_rows, "tallest layer the engine takes"),
        ("MAX_COLS", 16, cfg.max_cols, "widest layer the engine takes"),
    ]
    counters = [
        ("CYCLES", "busy cycles of the current/last run"),
        ("INSTRUCTIONS", "instructions completed"),
        ("MACS", "weight x activation products done"),
        ("ZERO_ACTS", "products skipped for a zero activation"),
        ("STALLS", "cycles the MAC array waited for weight words"),
    ]
    return (
        R("ID", 0x000, 32, Access.RO, MAP_ID, "map identification: \"NEP\", version 1"),
        R("CTRL", 0x004, 2, Access.WO, 0, "run control (pulses)",
          (Field("start", 0, 1, "begin a run at START_PC"),
           Field("soft_reset", 1, 1, "abandon any run, back to idle (wins over start)"))),
        R("STATUS", 0x008, 3, Access.RO, 0, "run state",
          (Field("busy", 0, 1, "a run is in progress"),
           Field("done", 1, 1, "the last run ended (until the next start/soft reset)"),
           Field("error", 2, 1, "done, and ERROR != 0"))),
        R("ERROR", 0x00C, 8, Access.RO, 0, "ErrorCode of the last run (0 after HALT)"),
        R("FAULT_PC", 0x010, 16, Access.RO, 0, "PC of the faulting instruction or fetch"),
        R("RESULT", 0x014, 16, Access.RO, 0, "last ARGMAX index"),
        R("IRQ_ENABLE", 0x018, 2, Access.RW, 0, "interrupt enables", irq_fields),
        R("IRQ_STATUS", 0x01C, 2, Access.RW1C, 0, "pending interrupt causes", irq_fields),
        R("START_PC", 0x020, 16, Access.RW, 0, "entry address of the next run"),
        R("PROG_LEN", 0x024, 17, Access.RW, 0, "valid program words"),
        R("DESC_COUNT", 0x028, 9, Access.RW, 0, "valid descriptors"),
        R("CONST_COUNT", 0x02C, 9, Access.RW, 0, "valid constants"),
        R("WATCHDOG", 0x030, 32, Access.RW, cfg.program_depth,
          "most instructions a run may complete"),
        R("VL", 0x034, 16, Access.RO, 0, "vector length (SETVL; 0 at every start)"),
        R("VN", 0x038, 16, Access.RO, 0, "row count (SETVL; 0 at every start)"),
        R("SYNC_COUNT", 0x03C, 32, Access.RO, 0, "SYNC instructions executed (kept across runs)"),
        *(R(name, 0x040 + 4 * i, 32, Access.RO, 0, doc + " (0 at every start)")
          for i, (name, doc) in enumerate(counters)),
        *(R(name, 0x080 + 4 * i, width, Access.RO, value, "configuration: " + doc)
          for i, (name, width, value, doc) in enumerate(config)),
    )


def _windows(cfg: ProcessorConfig) -> tuple[Window, ...]:
    specs = {
        "constants": (cfg.const_depth, 64, "(multiplier, shift): part 0 multiplier, part 1 "
                      "shift (sign-extended)"),
        "descriptors": (cfg.desc_depth, 512, "64-byte descriptors: part k = bytes 4k..4k+3"),
        "scratch": (cfg.scratch_depth, 16, "16-bit entries, bits 31..16 read 0"),
        "program": (cfg.program_depth, 64, "instructions: part 0 bits 31..0 (b, a), "
                    "part 1 bits 63..32 (d, p, opcode)"),
        "params": (cfg.param_depth, 8 * PARAM_BYTES, "9-byte row records (bias, multiplier, "
                   "shift)"),
        "weights": (cfg.weight_depth, cfg.word_bits, "stream words, padding bits 0"),
    }
    out = []
    for name, (depth, bits, doc) in specs.items():
        base, span, max_depth = WINDOW_LAYOUT[name]
        w = Window(name, base, span, depth, bits, doc)
        if depth > max_depth or depth * w.stride > span:
            raise ValueError(f"{name}: {depth} words do not fit the bus window "
                             f"(at most {min(max_depth, span // w.stride)})")
        out.append(w)
    return tuple(out)


class RegisterMap:
    """The host's view of a NEP processor of configuration ``config``.

    Parameters
    ----------
    config : ProcessorConfig
        Memory sizes; ``weight_depth`` and ``param_depth`` at most 2**20.

    Attributes
    ----------
    registers : tuple of Register
        In offset order.
    windows : tuple of Window
        In address order.
    addr_width : int
        Bus byte address width (``ADDR_WIDTH``).
    """

    def __init__(self, config: ProcessorConfig | None = None):
        self.config = config or ProcessorConfig()
        self.addr_width = ADDR_WIDTH
        self.registers = _registers(self.config)
        self.windows = _windows(self.config)
        self._by_offset = {r.offset: r for r in self.registers}
        self._by_name = {r.name: r for r in self.registers}
        self._by_name.update({w.name: w for w in self.windows})

    def register(self, name: str) -> Register:
        return self._by_name[name]

    def window(self, name: str) -> Window:
        return self._by_name[name]

    def decode(self, addr: int) -> Location | None:
        """The register or word part at byte address ``addr`` (its low two bits are
        ignored, as on the bus), or None where the bus answers ``SLVERR``."""
        if not 0 <= addr < 1 << self.addr_width:
            return None
        addr &= ~3
        if addr < REG_SPAN:
            reg = self._by_offset.get(addr)
            return Location(reg.name, 0, 0) if reg else None
        for w in self.windows:
            if w.base <= addr < w.base + w.span:
                index, rest = divmod(addr - w.base, w.stride)
                part = rest // 4
                if index < w.depth and part < w.parts:
                    return Location(w.name, index, part)
                return None
        return None

    def address(self, region: str, index: int = 0, part: int = 0) -> int:
        """Byte address of a register (by name) or of a window word's part."""
        item = self._by_name[region]
        if isinstance(item, Register):
            return item.offset
        if not (0 <= index < item.depth and 0 <= part < item.parts):
            raise IndexError(f"{region}: word {index} part {part} is outside "
                             f"{item.depth} words of {item.parts} parts")
        return item.base + index * item.stride + 4 * part

    def markdown(self) -> str:
        """The register, field and window tables of ``docs/register-map.md``."""
        lines = ["| offset | register | width | access | reset | meaning |",
                 "| ---: | --- | ---: | --- | ---: | --- |"]
        for r in self.registers:
            lines.append(f"| 0x{r.offset:03X} | `{r.name}` | {r.width} | {r.access.value} "
                         f"| 0x{r.reset:X} | {r.doc} |")
        lines += ["", "| register | bit | field | meaning |", "| --- | ---: | --- | --- |"]
        for r in self.registers:
            for f in r.fields:
                lines.append(f"| `{r.name}` | {f.lsb} | `{f.name}` | {f.doc} |")
        lines += ["", "| window | base | span | words | word bits | parts | stride | "
                  "content |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for w in self.windows:
            lines.append(f"| `{w.name}` | 0x{w.base:07X} | 0x{w.span:X} | {w.depth} | "
                         f"{w.word_bits} | {w.parts} | {w.stride} | {w.doc} |")
        return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(RegisterMap().markdown())
