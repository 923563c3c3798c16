"""`fedprge plot` on hand-written run directories: real PNGs, legends labelled by what differs."""

import pytest
from matplotlib.figure import Figure

from simulation.plot import plot
from simulation.rundir import write_json
from tests.simulation.test_cli import fedprge
from tests.simulation.test_report import run_a, run_b

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["acc_vs_bytes.png", "acc_vs_round.png", "acc_vs_time.png"]


def assert_pngs(paths):
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, path  # axes, lines and a legend


def test_plot_cli_writes_three_pngs_into_the_common_parent(tmp_path):
    a, b = run_a(tmp_path / "runs" / "a"), run_b(tmp_path / "runs" / "b")
    proc = fedprge("plot", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    expected = [tmp_path / "runs" / n for n in NAMES]
    assert proc.stdout.split() == [str(p) for p in expected]
    assert_pngs(expected)


def test_out_dir_and_one_metric(tmp_path):
    a = run_a(tmp_path / "a")
    written = plot([a], out=tmp_path / "figs" / "nested", metric="test_acc")
    assert [p.name for p in written] == NAMES
    assert all(p.parent == tmp_path / "figs" / "nested" for p in written)
    assert_pngs(written)
    assert [p.parent for p in plot([a])] == [a] * 3  # one directory given: the plots describe it


def test_legends_carry_the_derived_labels(tmp_path, monkeypatch):
    seen = []
    original = Figure.savefig

    def spy(fig, path, **kwargs):
        ax = fig.axes[0]
        seen.append((ax.get_xscale(), [t.get_text() for t in ax.get_legend().get_texts()],
                     sorted({line.get_linestyle() for line in ax.get_lines()})))
        return original(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    sweep = tmp_path / "sweep"
    run_a(sweep / "one")
    run_b(sweep / "two")
    write_json(sweep / "sweep.json", {"points": [{"name": "one"}, {"name": "two"}]})
    plot([sweep])
    labels = ["method=prge q=4", "method=fo q=16"]
    # bytes on a log axis; calibrated solid and raw dashed, one legend entry per run
    assert seen == [("log", labels, ["-", "--"]), ("linear", labels, ["-", "--"]),
                    ("linear", labels, ["-", "--"])]


def test_plot_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "sweep").mkdir()
    write_json(tmp_path / "sweep" / "sweep.json", {"points": [{"name": "pending"}]})
    for target, message in ((tmp_path / "nope", "is not a directory"),
                            (tmp_path / "empty", "has no metrics.jsonl"),
                            (tmp_path / "sweep", "has no point with metrics.jsonl")):
        proc = fedprge("plot", str(target))
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fedprge:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def test_seeds_of_one_setting_draw_one_mean_line_and_a_band(tmp_path, monkeypatch):
    from matplotlib.collections import PolyCollection

    from tests.simulation.test_report import seeded

    seen = []
    original = Figure.savefig

    def spy(fig, path, **kwargs):
        ax = fig.axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        seen.append((len(bands), [t.get_text() for t in ax.get_legend().get_texts()],
                     [list(line.get_ydata()) for line in solid]))
        return original(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    runs = [seeded(tmp_path / f"s{i}", i, 0.7, 0.75) for i in range(3)]
    # another seed moves round 1's calibrated accuracy: 70, 70, 85 -> mean 75
    text = (runs[2] / "metrics.jsonl").read_text().replace('"test_acc_cal": 0.7', '"test_acc_cal": 0.85')
    (runs[2] / "metrics.jsonl").write_text(text)
    run_b(tmp_path / "fo")
    plot([*runs, tmp_path / "fo"], out=tmp_path / "figs")
    bands, legend, solid = seen[1]  # accuracy vs round
    assert bands == 2  # calibrated and raw of the 3-seed setting; the single fo run has none
    assert legend == ["method=prge q=4 (3 seeds)", "method=fo q=16"]
    assert solid[0] == pytest.approx([55.0, 75.0, 65.0]) and solid[1] == pytest.approx([55.0, 85.0])
