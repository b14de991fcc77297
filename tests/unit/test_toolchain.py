"""The Verilator build cache key (``sim.toolchain.build_key``)."""

from pathlib import Path

import cocotb_tools.config

from sim.toolchain import build_key


def test_key_follows_sources_options_and_the_venvs_cocotb_libraries(monkeypatch):
    base = build_key("module m; endmodule\n", ["-O2"])
    assert build_key("module m; endmodule\n", ["-O2"]) == base  # cached across runs
    assert build_key("module n; endmodule\n", ["-O2"]) != base
    assert build_key("module m; endmodule\n", ["-O2", "--trace"]) != base
    # A build linked against another venv's cocotb libraries (its RUNPATH) is not reused:
    # it stops loading once that checkout is deleted.
    monkeypatch.setattr(cocotb_tools.config, "libs_dir", Path("/elsewhere/cocotb/libs"))
    assert build_key("module m; endmodule\n", ["-O2"]) != base
