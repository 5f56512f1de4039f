from spatialssl.commands.demo import run_demo, verdicts
from spatialssl.evaluate import ProbeResult


def result(knn, linear):
    return {"knn": knn, "linear": {0: ProbeResult(linear, 1.0)}}


def test_verdicts_say_in_words_whether_a_method_beat_random_weights():
    rows = {"random weights": [result(0.20, 0.30), result(0.22, 0.31)],
            "relational reasoning": [result(0.30, 0.29), result(0.31, 0.30)]}
    lines = verdicts(rows)
    assert lines == [
        "relational reasoning, kNN: +9.5 points; it beats random weights by more than the seed spread.",
        "relational reasoning, linear: -1.0 points; it does NOT beat random weights at this budget "
        "(below, beyond the seed spread)."]


def test_the_demo_runs_every_method_with_every_seed_and_reports_mean_and_verdicts(tmp_path, capsys):
    rows = run_demo(tmp_path / "demo", ["train.epochs=1", "eval.epochs=2", "train.batch_size=16"], progress=False,
                    seeds=(0, 1), images=(48, 32))
    out = capsys.readouterr().out
    assert {label: len(r) for label, r in rows.items()} == {"random weights": 2, "relational reasoning": 2,
                                                            "spatial reasoning": 2}
    assert "mean ± std over 2 seeds" in out and "linear + 9 patches" in out
    for method in ("relational reasoning", "spatial reasoning"):
        for measure in ("kNN", "linear", "linear + 9 patches"):
            assert any(line.startswith(f"{method}, {measure}: ") and "random weights" in line for line in out.splitlines())
    assert (tmp_path / "demo" / "sr" / "seed1" / "last.ckpt").is_file()
    seeds = [r["linear"][0].test_acc for r in rows["relational reasoning"]]
    assert len(rows["relational reasoning"][0]["linear"]) == 2  # image alone and image + 9 patches
    assert seeds[0] != seeds[1] or rows["relational reasoning"][0]["knn"] != rows["relational reasoning"][1]["knn"]
