"""`fedprge plot` on hand-written run directories: real PNGs, PDFs and SVGs, legends labelled by
what differs, the zero-shot line, and the CSV of the plotted points."""

import csv
import json

import pytest
from matplotlib.figure import Figure

from simulation.cli import main
from simulation.plot import plot
from simulation.rundir import write_json
from tests.simulation.test_cli import fedprge
from tests.simulation.test_report import BASE, run_a, run_b, seeded

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["acc_vs_bytes_up.png", "acc_vs_bytes.png", "acc_vs_round.png", "acc_vs_time.png"]


def assert_pngs(paths):
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, path  # axes, lines and a legend


def test_plot_cli_writes_four_pngs_into_the_common_parent(tmp_path):
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
    assert [p.parent for p in plot([a])] == [a] * 4  # one directory given: the plots describe it


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
    # only what differs (not model, K, ...); the zero-shot line last, dotted
    labels = ["method=prge q=4", "method=fo q=16", "zero-shot (calibrated)"]
    # bytes on a log axis; calibrated solid and raw dashed, one legend entry per run
    styles = ["-", "--", ":"]
    assert seen == [("log", labels, styles), ("log", labels, styles), ("linear", labels, styles),
                    ("linear", labels, styles)]


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
    bands, legend, solid = seen[2]  # accuracy vs round
    assert bands == 2  # calibrated and raw of the 3-seed setting; the single fo run has none
    assert legend == ["method=prge q=4 (3 seeds)", "method=fo q=16", "zero-shot (calibrated)"]
    assert solid[0] == pytest.approx([55.0, 75.0, 65.0]) and solid[1] == pytest.approx([55.0, 85.0])


def spy_axes(monkeypatch):
    """Every figure's axes and file name, as saved."""
    seen = []
    original = Figure.savefig

    def spy(fig, path, **kwargs):
        seen.append((path.name, fig.axes[0]))
        return original(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def test_x_picks_the_figures_repeated_or_comma_separated(tmp_path, capsys):
    a = run_a(tmp_path / "a")
    assert main(["plot", str(a), "--x", "time,rounds", "--x", "bytes-up", "--x", "time"]) == 0
    names = ["acc_vs_time.png", "acc_vs_round.png", "acc_vs_bytes_up.png"]  # as asked, each once
    assert capsys.readouterr().out.split() == [str(a / n) for n in names]
    assert sorted(p.name for p in a.glob("acc_vs_*")) == sorted(names)
    with pytest.raises(SystemExit) as usage:
        main(["plot", str(a), "--x", "bytes-down"])
    assert usage.value.code == 2
    assert "an x axis is one of bytes-up, bytes, rounds, time" in capsys.readouterr().err


def test_bytes_up_counts_uploads_and_bytes_counts_both_ways(tmp_path, monkeypatch):
    """run_a sends 200 B up and 100 B down in round 1, 200 B up and 300 B down in round 2."""
    seen = spy_axes(monkeypatch)
    plot([run_a(tmp_path / "a")], x=["bytes-up", "bytes"], metric="test_acc_cal")
    solid = {name: [list(line.get_xdata()) for line in ax.get_lines() if line.get_linestyle() == "-"]
             for name, ax in seen}
    assert solid == {"acc_vs_bytes_up.png": [[200, 400]], "acc_vs_bytes.png": [[300, 800]]}
    assert [ax.get_xlabel() for _, ax in seen] == ["cumulative bytes uploaded by clients",
                                                   "cumulative bytes sent (up + down)"]


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF-"), ("svg", b"<?xml")])
def test_pdf_and_svg_are_written_whole_and_reproducibly(tmp_path, fmt, magic):
    runs = [run_a(tmp_path / "a"), run_b(tmp_path / "b")]
    written = plot(runs, out=tmp_path / "figs", fmt=fmt)
    assert [p.name for p in written] == [n.replace(".png", f".{fmt}") for n in NAMES]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(magic) and len(data) > 5_000, path
    if fmt == "pdf":  # TrueType, embedded: publishers refuse Type 3 fonts
        assert b"/FontFile2" in data and b"/Type3" not in data
    again = plot(runs, out=tmp_path / "again", fmt=fmt)  # no timestamp, no random ids
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]
    assert not list((tmp_path / "figs").glob("*.png"))


def dotted(ax):
    return [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]


def test_zero_shot_line_at_the_round_0_accuracy(tmp_path, monkeypatch):
    seen = spy_axes(monkeypatch)
    runs = [seeded(tmp_path / f"s{i}", i, 0.7, 0.75) for i in range(2)] + [run_b(tmp_path / "fo")]
    plot(runs, x=["rounds"], metric="test_acc", out=tmp_path / "figs")
    ax = seen[-1][1]
    # raw zero-shot 50 % in every run: one line, in the legend once, after the runs
    assert dotted(ax) == [pytest.approx(50.0)]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "zero-shot"
    assert not ax.texts  # nothing to tell apart
    # a run without a round-0 evaluation adds no line
    metrics = [json.loads(line) for line in (runs[-1] / "metrics.jsonl").read_text().splitlines()]
    (runs[-1] / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics[1:]))
    plot(runs, x=["rounds"], metric="test_acc", out=tmp_path / "figs")
    assert dotted(seen[-1][1]) == [pytest.approx(50.0)]


def test_runs_starting_apart_get_a_zero_shot_line_each_named_by_what_sets_them_apart(tmp_path,
                                                                                      monkeypatch):
    seen = spy_axes(monkeypatch)
    a, fo = run_a(tmp_path / "a"), run_b(tmp_path / "fo")
    other = run_b(tmp_path / "other")  # another model: starts at 60 % calibrated
    write_json(other / "config.json", {**BASE, "method": "fo", "q": 16, "model": "bigger"})
    text = (other / "metrics.jsonl").read_text().replace('"test_acc_cal": 0.55', '"test_acc_cal": 0.6', 1)
    (other / "metrics.jsonl").write_text(text)
    plot([a, fo, other], x=["rounds"], out=tmp_path / "figs")
    ax = seen[-1][1]
    assert dotted(ax) == [pytest.approx(55.0), pytest.approx(60.0)]
    # method and q differ within the first start (prge and fo on tiny): only model names them
    assert [t.get_text() for t in ax.texts] == ["model=tiny", "model=bigger"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["method=prge q=4 model=tiny", "method=fo q=16 model=tiny",
                          "method=fo q=16 model=bigger"]
    assert legend.count("zero-shot (calibrated)") == 1
    # no key sets them apart (same config, other metrics): the accuracy does
    write_json(other / "config.json", {**BASE, "method": "fo", "q": 16})
    plot([fo, other], x=["rounds"], out=tmp_path / "figs")
    assert [t.get_text() for t in seen[-1][1].texts] == ["55.0 %", "60.0 %"]


def test_csv_holds_exactly_the_plotted_points(tmp_path, capsys):
    runs = [seeded(tmp_path / f"s{i}", i, 0.7, 0.75) for i in range(3)]
    # another seed moves round 1's calibrated accuracy: 70, 70, 85 -> mean 75 ± 4.303 * 5
    text = (runs[2] / "metrics.jsonl").read_text().replace('"test_acc_cal": 0.7', '"test_acc_cal": 0.85')
    (runs[2] / "metrics.jsonl").write_text(text)
    fo = run_b(tmp_path / "fo")
    out = tmp_path / "figs"
    assert main(["plot", *map(str, runs), str(fo), "--out", str(out), "--x", "rounds,time",
                 "--metric", "test_acc_cal", "--format", "svg", "--csv"]) == 0
    names = ["acc_vs_round.svg", "acc_vs_round.csv", "acc_vs_time.svg", "acc_vs_time.csv"]
    assert capsys.readouterr().out.split() == [str(out / n) for n in names]
    with (out / "acc_vs_round.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["series", "metric", "round", "x_round", "y_mean", "y_low", "y_high", "n_seeds"],
        ["method=prge q=4", "test_acc_cal", "0", "0", "55", "55", "55", "3"],
        ["method=prge q=4", "test_acc_cal", "1", "1", "75", "53.485", "96.515", "3"],
        ["method=prge q=4", "test_acc_cal", "2", "2", "65", "65", "65", "3"],
        ["method=fo q=16", "test_acc_cal", "0", "0", "55", "55", "55", "1"],
        ["method=fo q=16", "test_acc_cal", "2", "2", "85", "85", "85", "1"],
        ["zero-shot", "test_acc_cal", "0", "", "55", "55", "55", "4"]]
    # time in the unit drawn: fo's runs past ten minutes? no (150 s): seconds, the seeds' mean x
    with (out / "acc_vs_time.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][3] == "x_time_s" and [r[3] for r in rows[1:4]] == ["1", "2", "3"]
