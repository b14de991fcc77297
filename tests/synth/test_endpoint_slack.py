"""``hw.endpoint_slack``: static timing from nextpnr's SDF, on a hand-written file.

The routed-design check (the worst end point is nextpnr's own critical path) is in
``tests/synth/test_synth.py``, on the designs ``make test`` places.
"""

import pytest

from hw.endpoint_slack import by_signal, endpoint_slacks, parse_sdf
from hw.synth import _signal_of, endpoint_summary, endpoint_table


def _cell(celltype, inst, *iopaths, setup_di=None):
    """A CELL block as nextpnr writes it: IOPATHs, and a setup check on DI if given."""
    lines = ["  (CELL", f'    (CELLTYPE "{celltype}")', f"    (INSTANCE {inst})",
             "    (DELAY", "      (ABSOLUTE", *(f"        {x}" for x in iopaths), "      )",
             "    )"]
    if setup_di is not None:
        lines += ["    (TIMINGCHECK", f"      (SETUPHOLD (posedge DI) (posedge CLK) "
                  f"({setup_di}:{setup_di}:{setup_di}) (0:0:0))", "    )"]
    return "\n".join(lines + ["  )"])


def _ff(inst, clk_to_q=500, setup=100):
    d = f"({clk_to_q}:{clk_to_q}:{clk_to_q})"
    return _cell("TRELLIS_FF", inst, f"(IOPATH CLK Q {d} {d})", setup_di=setup)


def _net(a, b, ps):
    return f"        (INTERCONNECT {a} {b} ({ps}:{ps}:{ps}) ({ps}:{ps}:{ps}))"


def _sdf():
    """Two registers ``a`` and ``b\\[3\\]`` into a LUT (slow input A, fast input B) into
    register ``y``; ``a`` also straight into register ``z``. Delays in ps."""
    top = ["  (CELL", '    (CELLTYPE "top")', "    (INSTANCE )", "    (DELAY", "      (ABSOLUTE",
           _net("gb/CLKO", "a_TRELLIS_FF_Q/CLK", 0), _net("gb/CLKO", "b\\[3\\]_TRELLIS_FF_Q/CLK", 0),
           _net("gb/CLKO", "y_TRELLIS_FF_Q/CLK", 0), _net("gb/CLKO", "z_TRELLIS_FF_Q/CLK", 0),
           _net("a_TRELLIS_FF_Q/Q", "y_LUT4_Z/A", 2000),
           _net("b\\[3\\]_TRELLIS_FF_Q/Q", "y_LUT4_Z/B", 300),
           _net("y_LUT4_Z/F", "y_TRELLIS_FF_Q/DI", 1000),
           _net("a_TRELLIS_FF_Q/Q", "z_TRELLIS_FF_Q/DI", 700),
           "      )", "    )", "  )"]
    lut = _cell("TRELLIS_COMB", "y_LUT4_Z", "(IOPATH A F (400:400:400) (450:450:450))",
                "(IOPATH B F (200:200:200) (200:200:200))")
    return "\n".join(['(DELAYFILE', '  (SDFVERSION "3.0")', '  (DIVIDER /)', '  (TIMESCALE 1ps)',
                      *top, _cell("DCCA", "gb", "(IOPATH CLKI CLKO (0:0:0) (0:0:0))"),
                      _ff("a_TRELLIS_FF_Q"), _ff("b\\[3\\]_TRELLIS_FF_Q", clk_to_q=900),
                      _ff("y_TRELLIS_FF_Q", setup=150), _ff("z_TRELLIS_FF_Q"), lut, ")"])


def test_worst_arrival_slack_and_path_per_end_point():
    ends = endpoint_slacks(parse_sdf(_sdf()), 4.0)
    assert [e.pin for e in ends] == [("y_TRELLIS_FF_Q", "DI"), ("z_TRELLIS_FF_Q", "DI")]
    y, z = ends
    # a: 0.5 clock-to-out + 2.0 routing + 0.45 (A -> F, the slower edge) + 1.0 routing;
    # b's path (0.9 + 0.3 + 0.2 + 1.0 = 2.4) is shorter, so it is not the one kept.
    assert y.arrival_ns == pytest.approx(3.95) and y.setup_ns == pytest.approx(0.15)
    assert y.slack_ns == pytest.approx(4.0 - 3.95 - 0.15) and y.path_ns == pytest.approx(4.1)
    assert y.path == [("a_TRELLIS_FF_Q", "Q"), ("y_LUT4_Z", "A"), ("y_LUT4_Z", "F"),
                      ("y_TRELLIS_FF_Q", "DI")]
    assert y.routing_ns == pytest.approx(3.0)
    assert z.arrival_ns == pytest.approx(1.2) and z.slack_ns == pytest.approx(4.0 - 1.3)
    # The clock pins and the LUT's inputs (an IOPATH onward) are not end points.
    assert len(ends) == 2


def test_grouped_by_signal_worst_first_with_failing_counts():
    groups = by_signal(endpoint_slacks(parse_sdf(_sdf()), 4.0), _signal_of)
    assert [(g["end"], g["start"], g["failing"], g["endpoints"]) for g in groups] == [
        ("y", "a", 1, 1), ("z", "a", 0, 1)]
    assert groups[0]["slack_ns"] == pytest.approx(-0.1) and groups[0]["cells"] == 3
    # A longer period: nothing fails.
    assert all(g["failing"] == 0 for g in by_signal(endpoint_slacks(parse_sdf(_sdf()), 5.0),
                                                    _signal_of))


def test_escaped_names_unescaped():
    timing = parse_sdf(_sdf())
    assert ("b[3]_TRELLIS_FF_Q", "Q") in timing.launch
    assert timing.launch[("b[3]_TRELLIS_FF_Q", "Q")] == pytest.approx(0.9)


@pytest.mark.parametrize("text", ["", "(CELL)", "module top; endmodule"])
def test_not_an_sdf_file_refused(text):
    with pytest.raises(ValueError, match="not an SDF file"):
        parse_sdf(text)


@pytest.mark.parametrize("period", [0, -1.0])
def test_bad_period_refused(period):
    with pytest.raises(ValueError, match="period_ns must be positive"):
        endpoint_slacks(parse_sdf(_sdf()), period)


def test_summary_and_table_of_a_record(tmp_path):
    sdf = tmp_path / "timing.sdf"
    sdf.write_text(_sdf())
    ends = endpoint_summary(sdf, 4.0)
    assert (ends["total"], ends["failing"]) == (2, 1)
    table = endpoint_table(dict(target_mhz=250.0, seed=3, endpoints=ends)).splitlines()
    assert table[0] == "1 of 2 register inputs miss 4.0 ns (250 MHz), seed 3."
    assert table[4] == "| `y` | `a` | -0.10 | 4.10 | 3.00 | 3 | 1 / 1 |"
    assert len(table) == 6
    assert "no end point timing" in endpoint_table(dict(target_mhz=250.0))
