"""`fedprge report` on run directories written here by hand: exact cells, labels, sweep dirs."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from simulation.cli import main
from simulation.rundata import load_runs
from simulation.rundir import write_json
from simulation.sweep import point_name
from tests.simulation.test_cli import fedprge

BASE = {"model": "tiny", "q": 4, "local-steps": 2, "clients-per-round": 2, "strategy": "mean",
        "strategy-args": {}, "rounds": 2, "out": "runs", "cache": "", "seed": 0}


def round_record(t, up, down, elapsed, acc=None, cal=None):
    rec = {"round": t, "replies": 2, "rejected": 0, "bytes_up": up, "bytes_down": down, "lr": 0.05,
           "train_loss": 0.69, "theta_hash": f"h{t}", "log_len": 8 * t, "round_s": 1.0,
           "elapsed_s": elapsed}
    if acc is not None:
        rec.update(test_acc=acc, test_acc_cal=cal, test_loss=0.6)
    return rec


def make_run(path, config, metrics, summary=None, torn_tail=False):
    """A run directory as `fedprge run` leaves it (summary None: killed before the end)."""
    path.mkdir(parents=True)
    if config is not None:
        write_json(path / "config.json", config)
    text = "".join(json.dumps(m) + "\n" for m in metrics)
    (path / "metrics.jsonl").write_text(text + ('{"round": 9, "bytes' if torn_tail else ""))
    if summary is not None:
        write_json(path / "summary.json", summary)
    return path


def run_a(path):
    """Seeds and scalars: a few hundred bytes; best calibrated accuracy at round 1, not the end."""
    metrics = [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.55, "test_loss": 0.7,
                "theta_hash": "h0", "elapsed_s": 1.0},
               round_record(1, 200, 100, 2.0, 0.6, 0.7), round_record(2, 200, 300, 3.0, 0.625, 0.65)]
    summary = {"zero_shot_acc": 0.5, "zero_shot_acc_cal": 0.55, "final_acc": 0.625,
               "final_acc_cal": 0.65, "client_global_acc": 0.6, "client_personal_acc": 0.75,
               "bytes_up": 400, "bytes_down": 400, "bytes_up_per_client_round": 100.0,
               "bytes_eval": 10, "final_theta_hash": "h2", "log_len": 16, "strategy": "mean",
               "strategy_summary": {}, "wall_s": 3.5, "rounds": 2, "adapter_dim": 1000}
    return make_run(path, BASE, metrics, summary)


def run_b(path):
    """A dense first-order run: MiB uploads, no personalization, minutes of wall time."""
    mib = 2 ** 20
    metrics = [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.55, "test_loss": 0.7,
                "theta_hash": "h0", "elapsed_s": 30.0},
               round_record(1, 3 * mib // 2, 2048, 90.0),
               round_record(2, 3 * mib // 2, 2048, 150.0, 0.8, 0.85)]
    summary = {"zero_shot_acc": 0.5, "zero_shot_acc_cal": 0.55, "final_acc": 0.8, "final_acc_cal": 0.85,
               "client_global_acc": None, "client_personal_acc": None, "bytes_up": 3 * mib,
               "bytes_down": 4096, "bytes_up_per_client_round": 3 * mib / 4, "bytes_eval": 0,
               "final_theta_hash": "h2", "log_len": 0, "strategy": "mean", "strategy_summary": {},
               "wall_s": 150.0, "rounds": 2, "adapter_dim": 1000}
    return make_run(path, {**BASE, "method": "fo", "q": 16}, metrics, summary)


HEADER = ("| run | method | strategy | q | K | clients/round | final acc (raw / cal) | best cal acc (round) "
          "| client personalized acc | bytes up | bytes down | up / client / round | wall time |\n"
          "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
ROW_A = ("| method=prge q=4 | prge | mean | 4 | 2 | 2 | 62.5 % / 65.0 % | 70.0 % (1) | 75.0 % "
         "| 400 B | 400 B | 100 B | 3.5 s |\n")
ROW_B = ("| method=fo q=16 | fo | mean | 16 | 2 | 2 | 80.0 % / 85.0 % | 85.0 % (2) | - "
         "| 3.0 MiB | 4.0 KiB | 768.0 KiB | 2.5 min |\n")


def test_report_table_exact(tmp_path):
    a, b = run_a(tmp_path / "a"), run_b(tmp_path / "b")
    out = tmp_path / "notes" / "report.md"
    proc = fedprge("report", str(a), str(b), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HEADER + ROW_A + ROW_B
    assert out.read_text() == proc.stdout


def test_killed_run_gets_a_row_from_its_metrics(tmp_path):
    """No summary.json and a torn last line: totals from the rounds it finished."""
    metrics = [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.55, "elapsed_s": 1.0},
               round_record(1, 2048, 1024, 5.0, 0.6, 0.6), round_record(2, 2048, 1024, 9.0)]
    make_run(tmp_path / "killed", {**BASE, "strategy": "trimmed", "strategy-args": {"trim": 0.1}},
             metrics, torn_tail=True)
    run_a(tmp_path / "a")
    from simulation.report import report

    text = report([tmp_path / "killed", tmp_path / "a"])
    killed = text.splitlines()[2]
    assert killed == ("| strategy=trimmed strategy-args.trim=0.1 (incomplete) | prge | trimmed(trim=0.1) | 4 "
                      "| 2 | 2 | 60.0 % / 60.0 % | 60.0 % (1) | - | 4.0 KiB | 2.0 KiB | 1.0 KiB | 9.0 s |")


def test_sweep_dir_expands_to_its_points_in_order(tmp_path):
    sweep = tmp_path / "sweep"
    names = [point_name([("method", "fo"), ("q", "16")]), point_name([("method", "prge"), ("q", "4")])]
    run_b(sweep / names[0])
    run_a(sweep / names[1])
    (sweep / "not-started").mkdir()  # a pending point: nothing to report yet
    write_json(sweep / "sweep.json", {"points": [{"name": names[0]}, {"name": "not-started"},
                                                 {"name": names[1]}]})
    proc = fedprge("report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == HEADER + ROW_B + ROW_A


def test_labels_name_what_differs(tmp_path):
    run_a(tmp_path / "a")
    make_run(tmp_path / "same-as-a", BASE, [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.5}])
    make_run(tmp_path / "no-config", None, [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.5}])
    make_run(tmp_path / "trim", {**BASE, "strategy-args": {"trim": 0.2}, "targets": ["q", "v"],
                                 "out": "elsewhere"}, [{"round": 0, "test_acc": 0.5}])
    runs = load_runs([tmp_path / n for n in ("a", "same-as-a", "no-config", "trim")])
    # out never counts; lists join with commas; a key a config lacks takes its default (targets);
    # identical labels get the directory name
    default_targets = "targets=q,k,v,o,gate,up,down"
    assert [r.label for r in runs] == [f"{default_targets} (a)", f"{default_targets} (same-as-a)",
                                       "no-config", "strategy-args.trim=0.2 targets=q,v"]
    only_one = load_runs([tmp_path / "a"])
    assert only_one[0].label == "a"  # nothing to compare with: the directory name


def test_report_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for target, message in ((tmp_path / "nope", "is not a directory"),
                            (tmp_path / "empty", "has no metrics.jsonl")):
        proc = fedprge("report", str(target))
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fedprge:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr


def seeded(path, seed, cal, personal):
    """run_a's setting with another seed and other accuracies."""
    run = run_a(path)
    write_json(run / "config.json", {**BASE, "seed": seed})
    summary = json.loads((run / "summary.json").read_text())
    write_json(run / "summary.json", {**summary, "final_acc_cal": cal, "client_personal_acc": personal})
    return run


def test_runs_differing_only_in_seed_fold_into_mean_and_interval(tmp_path):
    runs = [seeded(tmp_path / f"s{i}", i, cal, 0.75) for i, cal in enumerate((0.65, 0.70, 0.75))]
    other = run_b(tmp_path / "fo")
    proc = fedprge("report", *map(str, runs), str(other))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| setting | seeds |") and len(lines) == 4
    # cal: mean 70.0, sd 5.0 -> 4.303 * 5 / sqrt(3) = 12.4; raw identical -> a zero interval;
    # best cal per seed is 70.0 (round 1) in all three
    assert lines[2] == ("| method=prge q=4 | 3 (0,1,2) | prge | mean | 4 | 2 | 2 "
                        "| 62.5 ± 0.0 % / 70.0 ± 12.4 % | 70.0 ± 0.0 % | 75.0 ± 0.0 % | 400 B "
                        "| 400 B | 100 B | 3.5 s |")
    assert lines[3].startswith("| method=fo q=16 | 1 (0) | fo |") and "80.0 % / 85.0 %" in lines[3]
    per_seed = fedprge("report", "--per-seed", *map(str, runs))
    assert per_seed.stdout.startswith(HEADER) and len(per_seed.stdout.splitlines()) == 5


def test_cost_to_target_columns(tmp_path):
    """run_a: cal 70 % at round 1 (300 B spent, 1 s after round 0), never 80 %."""
    a = run_a(tmp_path / "a")
    proc = fedprge("report", str(a), "--target", "70", "--target", "80%")
    assert proc.returncode == 0, proc.stderr
    head, _, cells = proc.stdout.splitlines()
    assert head.endswith("| to 70 % cal (bytes · time) | to 80 % cal (bytes · time) |")
    assert cells.endswith("| 300 B · 1.0 s (r 1) | not reached |")
    seeds = [seeded(tmp_path / f"s{i}", i, 0.7, 0.75) for i in range(2)]
    text = (seeds[1] / "metrics.jsonl").read_text().replace('"test_acc_cal": 0.7', '"test_acc_cal": 0.6')
    (seeds[1] / "metrics.jsonl").write_text(text)  # this seed never reaches 70 %
    proc = fedprge("report", *map(str, seeds), "--target", "70")
    assert proc.stdout.splitlines()[2].endswith("| 300 B · 1.0 s (1/2 seeds) |")
    bad = fedprge("report", str(a), "--target", "170")
    assert bad.returncode == 2 and "not a percentage" in bad.stderr


def test_a_config_from_an_older_version_still_joins_its_seeds(tmp_path):
    """A key added since (written by later runs with its default) is not a difference."""
    runs = [seeded(tmp_path / f"s{i}", i, 0.7, 0.75) for i in range(2)]
    newer = json.loads((runs[1] / "config.json").read_text())
    write_json(runs[1] / "config.json", {**newer, "batch-order": "random"})
    lines = fedprge("report", *map(str, runs)).stdout.splitlines()
    assert len(lines) == 3 and "| 2 (0,1) |" in lines[2]


def test_cost_to_target_counts_an_accuracy_recorded_from_float32_at_the_target():
    from simulation.cost_to_target import first_reach
    from simulation.rundata import Run

    # 780 of 1,000 right, as float32 records it, then a round clearly past the target
    metrics = [{"round": 0, "elapsed_s": 10.0, "test_acc_cal": 0.68},
               {"round": 1, "bytes_up": 5, "bytes_down": 7, "elapsed_s": 20.0,
                "test_acc_cal": float(np.float32(0.78))},
               {"round": 2, "bytes_up": 5, "bytes_down": 7, "elapsed_s": 30.0,
                "test_acc_cal": 0.79}]
    hit = first_reach(Run(Path("run"), {}, metrics, None), 0.78)
    assert (hit.round, hit.bytes, hit.seconds) == (1, 12, 10.0)
    assert first_reach(Run(Path("run"), {}, metrics[:2], None), 0.781) is None


def test_a_killed_runs_upload_per_client_counts_the_clients_that_uploaded(tmp_path):
    """Round 2 had one valid reply of 2,048 bytes and a crash's error reply: a client uploads
    2 KiB a round (dividing every byte by rounds x clients-per-round said 1.75 KiB)."""
    crashed = {**round_record(2, 3072, 1024, 9.0), "replies": 1, "rejected": 1}
    metrics = [{"round": 0, "test_acc": 0.5, "test_acc_cal": 0.55, "elapsed_s": 1.0},
               {**round_record(1, 4096, 1024, 5.0, 0.6, 0.6), "bytes_up_valid": 4096},
               {**crashed, "bytes_up_valid": 2048}]
    make_run(tmp_path / "killed", BASE, metrics)
    from simulation.report import report

    row = report([tmp_path / "killed"]).splitlines()[2]
    assert "| 7.0 KiB | 2.0 KiB | 2.0 KiB |" in row, row


def test_csv_format_has_the_markdown_cells(tmp_path, capsys):
    a, b = run_a(tmp_path / "a"), run_b(tmp_path / "b")
    out = tmp_path / "tables" / "report.csv"
    assert main(["report", str(a), str(b), "--format", "csv", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    markdown = (HEADER + ROW_A + ROW_B).splitlines()
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in markdown]
    assert list(csv.reader(io.StringIO(text))) == [cells[0], *cells[2:]]  # no alignment row


def test_latex_format_is_a_booktabs_tabular(tmp_path, capsys):
    a, b = run_a(tmp_path / "a"), run_b(tmp_path / "b")
    assert main(["report", str(a), str(b), "--format", "latex", "--target", "70"]) == 0
    assert capsys.readouterr().out == (
        "% needs \\usepackage{booktabs}\n"
        "\\begin{tabular}{lllrrrrrrrrrrr}\n"
        "\\toprule\n"
        "run & method & strategy & q & K & clients/round & final acc (raw / cal) & best cal acc (round) "
        "& client personalized acc & bytes up & bytes down & up / client / round & wall time "
        "& to 70 \\% cal (bytes $\\cdot$ time) \\\\\n"
        "\\midrule\n"
        "method=prge q=4 & prge & mean & 4 & 2 & 2 & 62.5 \\% / 65.0 \\% & 70.0 \\% (1) & 75.0 \\% "
        "& 400 B & 400 B & 100 B & 3.5 s & 300 B $\\cdot$ 1.0 s (r 1) \\\\\n"
        "method=fo q=16 & fo & mean & 16 & 2 & 2 & 80.0 \\% / 85.0 \\% & 85.0 \\% (2) & - "
        "& 3.0 MiB & 4.0 KiB & 768.0 KiB & 2.5 min & 3.0 MiB $\\cdot$ 2.0 min (r 2) \\\\\n"
        "\\bottomrule\n"
        "\\end{tabular}\n")
    # a label from a directory name, and the seed table's intervals
    odd = run_a(tmp_path / "run_1 #2 & co")
    out = tmp_path / "table.tex"
    assert main(["report", str(odd), "--format", "latex", "--out", str(out)]) == 0
    assert out.read_text() == capsys.readouterr().out
    assert "\nrun\\_1 \\#2 \\& co & prge &" in out.read_text()
    seeds = [seeded(tmp_path / f"s{i}", i, cal, 0.75) for i, cal in enumerate((0.65, 0.70, 0.75))]
    assert main(["report", *map(str, seeds), "--format", "latex"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "\\begin{tabular}{llllrrrrrrrrrr}"  # setting, seeds, method, strategy: text
    assert lines[5].startswith("s0 & 3 (0,1,2) & prge & mean & 4 & 2 & 2 & 62.5 $\\pm$ 0.0 \\% "
                               "/ 70.0 $\\pm$ 12.4 \\% &")


def test_latex_escapes_every_special_character():
    from simulation.report import latex_escape

    assert latex_escape("50% of a_b & #1 {x} ~^ \\ $ | < > ± ·") == (
        "50\\% of a\\_b \\& \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{} \\textbackslash{} "
        "\\$ \\textbar{} \\textless{} \\textgreater{} $\\pm$ $\\cdot$")


def test_an_unknown_format_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["report", str(run_a(tmp_path / "a")), "--format", "html"])
    assert usage.value.code == 2 and "invalid choice: 'html'" in capsys.readouterr().err
