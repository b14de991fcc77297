"""NEP compiler and instruction-level simulator.

``compiler.isa`` (instruction set, descriptors, error codes, cycle model),
``compiler.compile`` (quantized model -> processor image, image loader) and
``compiler.iss`` (instruction-level simulator, golden-protocol backend). The
specification is ``docs/isa.md``.
"""
