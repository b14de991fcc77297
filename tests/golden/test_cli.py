"""``python -m golden``: end to end in a subprocess, and the error exits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golden import bench, cli
from golden.arbitration import CostModel
from golden.model import QuantModel, load_model, random_float_model, save_model
from golden.pipeline import RESULT_SCHEMA, Recognizer
from golden.wav import write_wav

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "golden", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = d / "tiny.npz"
    r = run_cli("random-model", model, "--seed", 2, cwd=d)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and r.stderr == ""
    wav = d / "speech.wav"
    write_wav(wav, cli.synthetic_speech(1.2, seed=4), 16000)
    return d, model, wav


def test_random_model_file_is_seeded(files, tmp_path):
    _, model, _ = files
    m = load_model(model)
    assert isinstance(m, QuantModel)
    again = tmp_path / "again.npz"
    assert cli.main(["random-model", str(again), "--seed", "2"]) == 0
    other = cli.random_model("small", seed=3)
    m2 = load_model(again)
    assert m2.scales == m.scales
    assert all(np.array_equal(m.tensors[k], m2.tensors[k]) for k in m.tensors)
    assert not np.array_equal(m.tensors["fast.lstm.weight"], other.tensors["fast.lstm.weight"])


def test_transcribe_json_end_to_end(files):
    d, model, wav = files
    r = run_cli("transcribe", model, wav, "--beam", 3, "--context", "bad wolf", "abc",
                "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar: stderr is not a terminal
    doc = json.loads(r.stdout)
    assert doc["schema"] == RESULT_SCHEMA
    assert len(doc["nbest"]) == 3
    expected = Recognizer(load_model(model), beam=3, context=["bad wolf", "abc"]).transcribe(wav)
    assert doc == json.loads(json.dumps(expected.to_dict()))
    assert doc["cost"]["unit"] == "macs" and doc["cost"]["speed"] == 25e6


def test_transcribe_text_end_to_end(files):
    d, model, wav = files
    r = run_cli("transcribe", model, wav, "--beam", 0, "--progress",
                "--after-final", "continue", "--device-speed", "2e6", cwd=d)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    expected = Recognizer(load_model(model), beam=0, after_final="continue",
                          cost=CostModel(speed=2e6)).transcribe(wav)
    assert out.startswith(f"transcript: {expected.text}\n")
    for key in ("n-best:", "end points", "branches: fast", "cost:", "MACs/s",
                "backlog: max", "latency:"):
        assert key in out
    fast, slow = expected.branch_frames["fast"], expected.branch_frames["slow"]
    assert f"fast {fast} " in out and f"slow {slow} " in out
    assert f"{expected.latency_ms:.1f} ms" in out
    assert "transcribing" in r.stderr and "1.2/1.2 s" in r.stderr  # the progress bar


def test_bad_model_files_exit_2(files, tmp_path):
    d, _, wav = files
    missing = run_cli("transcribe", tmp_path / "nope.npz", wav, cwd=d)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    bad = run_cli("transcribe", corrupt, wav, cwd=d)
    for r, what in ((missing, "no such file"), (bad, "not an NEP model file")):
        assert r.returncode == 2
        assert r.stderr.startswith("error: ") and what in r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""


def test_bad_audio_exits_2(files, tmp_path, capsys):
    d, model, _ = files
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    r = run_cli("transcribe", model, text, cwd=d)
    assert r.returncode == 2 and "unreadable audio" in r.stderr and "RIFF" in r.stderr
    assert "Traceback" not in r.stderr
    assert cli.main(["transcribe", str(model), str(tmp_path / "gone.wav")]) == 2
    assert "cannot read audio file" in capsys.readouterr().err
    assert cli.main(["transcribe", str(model), str(tmp_path)]) == 2  # a directory
    assert "cannot read audio file" in capsys.readouterr().err


def test_other_user_errors_exit_2(files, tmp_path, capsys):
    d, model, wav = files
    float_file = tmp_path / "float.npz"
    save_model(random_float_model(load_model(model).config), float_file)
    assert cli.main(["transcribe", str(float_file), str(wav)]) == 2
    assert "float model" in capsys.readouterr().err
    assert cli.main(["transcribe", str(model), str(wav), "--beam", "0",
                     "--context", "abc"]) == 2
    assert "needs beam search" in capsys.readouterr().err
    assert cli.main(["transcribe", str(model), str(wav), "--context", "x€"]) == 2
    assert "not in the token inventory" in capsys.readouterr().err
    assert cli.main(["transcribe", str(model), str(wav), "--device-speed", "0"]) == 2
    assert "CostModel.speed" in capsys.readouterr().err
    assert cli.main(["transcribe", str(model), str(wav), "--beam", "-2"]) == 2
    assert "beam must be" in capsys.readouterr().err
    assert cli.main(["random-model", str(tmp_path / "no" / "dir" / "m.npz")]) == 2
    assert "cannot write model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["transcribe", str(model)])
    assert e.value.code == 2


def test_bench_table(capsys):
    model = cli.random_model("small", seed=0)
    rows = bench.run_bench(model, cli.synthetic_speech(0.5, seed=1), beams=(0, 4))
    assert [r["mode"] for r in rows] == ["greedy", "beam 4"]
    assert all(r["audio_s"] == 0.5 and r["wall_s"] > 0 and
               r["x_real_time"] == pytest.approx(0.5 / r["wall_s"]) for r in rows)
    assert bench.parameter_count(model) == sum(
        v.size for k, v in model.tensors.items() if k.endswith((".weight", ".bias", ".table")))


def test_bench_main_prints_the_table(capsys):
    assert bench.main(["--seconds", "0.3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model: default random, 1,273,631 parameters")
    assert out[1].split()[:4] == ["mode", "audio", "s", "wall"]
    assert [line.split()[0] for line in out[2:]] == ["greedy", "beam"]
    assert out[2].split()[1] == "0.30"
