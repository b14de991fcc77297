"""Error codes reported by the engine (``docs/weight-format.md`` lists their causes)."""

import enum


class EngineError(enum.IntEnum):
    OK = 0
    SHAPE = 1  #: rows/cols zero or larger than the buffers, or stream words out of range
    ENCODING = 2  #: unknown value encoding
    SPLIT = 3  #: a word's split field is out of range or set without an end flag
    COLUMN = 4  #: a slot's column is past the layer width or repeats, or an int8 low slot has a delta
    LENGTH = 5  #: the stream ends more rows than the header has, or goes on after the last
    TRUNCATED = 6  #: the stream ran out before the last row ended
    NNZ = 7  #: nonzero weights in the stream disagree with the header
    CRC_STREAM = 8  #: the stream words fail their CRC
    CRC_PARAMS = 9  #: the row parameters fail their CRC
    MODE = 10  #: unknown output mode (not int8, int8 with ReLU or int16)
