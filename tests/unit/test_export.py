"""sbrrepro.export: results.csv and results.parquet, one line per row and seed (a row that runs
nothing: one line)."""

from __future__ import annotations

import pandas as pd


def test_results_export_one_line_per_row_and_seed(crafted):
    from sbrrepro.export import write_rows

    _, study, results = crafted
    write_rows(results, study.paths)
    for frame in (pd.read_csv(study.paths.results_csv), pd.read_parquet(study.paths.results_parquet)):
        assert len(frame) == 3 + 7  # row 1 has three seeds
        first = frame[frame["row"] == 1]
        assert list(first["seed"]) == [0, 1, 2] and list(first["ours_bbox_AP"]) == [38.0, 38.2, 38.4]
        assert set(first["verdict"]) == {"reproduced"}
        assert frame[frame["row"] == 5]["verdict"].item() == "cited"


def test_a_row_that_runs_nothing_is_one_line_of_its_own_numbers(crafted):
    """A derived line: ours computed from ours, no seed, no key; a cited row: the paper's number only;
    a failed run: its line, without numbers."""
    from sbrrepro.export import lines

    _, _, results = crafted
    by_row = {line["row"]: line for line in lines(results) if line["row"] in (3, 5, 8)}
    assert {k: by_row[8][k] for k in ("kind", "seeds", "seed", "key", "state", "ours_bbox_AP", "published_bbox_AP")} \
        == {"kind": "derived", "seeds": 0, "seed": None, "key": None, "state": "derived", "ours_bbox_AP": 1.2,
            "published_bbox_AP": 0.2}
    assert (by_row[5]["state"], by_row[5]["published_bbox_AP"], by_row[5]["ours_bbox_AP"]) == ("cited", 41.0, None)
    assert (by_row[3]["state"], by_row[3]["seed"], by_row[3]["ours_bbox_AP"]) == ("failed", 0, None)
