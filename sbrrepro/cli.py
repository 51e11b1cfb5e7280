"""The `sbrrepro` command: run, preflight, status, doctor, cancel, collect, report, repair, check-data,
import-stats, local-server, params, speed, plot-iou, plot-curves, plot-anchors.

Data flows plan -> configs -> jobs -> results -> report; each command parses its arguments, calls
its stage and prints (the terminal's views of a study: `views`). Bad input ends with one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import parser
from .errors import UserError


def _plans(given: list[str]) -> list[str]:
    """The plan files named on the command line, a flat `plans/tableN.yaml` being the main paper's;
    a line on stderr says so (stdout may be JSON)."""
    from .plan import MAIN_PAPER, locate

    out = []
    for name in given:
        found = locate(name)
        if str(found) != name:
            print(f"sbrrepro: {name} is the main paper's plan, {found} ({MAIN_PAPER})", file=sys.stderr)
        out.append(str(found))
    return out


def _request(args: argparse.Namespace, **given: Any) -> Any:
    """The first two stages' request of a command that takes plans (see sbrrepro.prepare)."""
    from .prepare import Request

    asked = {f: getattr(args, f) for f in ("smoke", "epochs", "data_root", "dry_run", "dataset", "seeds", "framework")
             if getattr(args, f, None) is not None}
    return Request(_plans(args.plans), Path(args.study), rows=getattr(args, "rows", None) or (), **{**asked, **given})


def cmd_run(args: argparse.Namespace) -> int:
    from . import jobs, preflight, views
    from .cluster import make_executor
    from .cluster.profile import load_cluster
    from .prepare import prepare

    profile = load_cluster(args.cluster)
    executor = make_executor(profile)
    prepared = prepare(_request(args, weights=profile.weights))
    study, rows = prepared.study, [rc for _, rc in prepared.chosen]
    if args.dry_run:
        todo = jobs.would_submit(study, rows, args.retry_failed)
        views.states(jobs.states(study, rows), args.json, todo, prepared.plans if prepared.whole else [])
        if not args.json:
            views.dry_run(prepared, executor.profile, todo)
        return 0
    refused = preflight.blocking(preflight.load(study.paths), [rc.train_key for rc in rows])
    if refused is not None:
        raise UserError(str(study.paths.preflight), ", ".join(refused.rows), f"its preflight {refused.line()}; "
                        "fix the row or its profile and run `sbrrepro preflight` again")
    for summary in prepared.checked:
        print(f"data checked: {summary.line()}")
    with study.submitting():
        submitted = jobs.submit(study, rows, executor, retry_failed=args.retry_failed)
    print(f"submitted {len(submitted)} job(s) ({executor.kind}) for {len(rows)} row(s) in {study.root}")
    if args.wait:
        return views.wait(study, rows)
    views.states(jobs.states(study, rows), False)
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    from . import preflight, views
    from .cluster import make_executor
    from .cluster.profile import load_cluster
    from .prepare import prepare

    size = preflight.image_size(args.image_size)
    if args.steps < 1:
        raise UserError("command line", "--steps", f"must be at least 1, got {args.steps}")
    profile = load_cluster(args.cluster)
    # The data is the preflight's own (COCO's first images, else the embedded set): no data check; the
    # weights are fetched unless the models start from random ones.
    prepared = prepare(_request(args, dry_run=True, weights=profile.weights, fetch_weights=not args.random_init))
    trainings = preflight.trainings(prepared.chosen)
    embedded, data = preflight.data(prepared)
    print(f"preflight: {len(trainings)} training(s) on {profile.name}, {data}", flush=True)
    found = preflight.submit_and_wait(prepared.study, trainings, make_executor(preflight.one_device(profile)),
                                      size=size, steps=args.steps, embedded=embedded, random_init=args.random_init,
                                      gpu_memory_GB=profile.gpu_memory_GB)
    views.preflight(found)
    print(f"recorded in {views.shell_path(prepared.study.paths.preflight)}")
    return 0 if all(f.ok for f in found) else 1


def cmd_status(args: argparse.Namespace) -> int:
    from . import jobs, preflight, views
    from .plan import load_plan
    from .rows import trained
    from .study import Study

    study = Study.open(Path(args.study))
    registered = study.select_rows(args.rows)
    # the cited and derived lines run nothing and are not rows of the store: shown with whole plans only
    plans = [] if args.rows else [load_plan(p) for p in dict.fromkeys(p for p, _ in registered)]
    states = jobs.states(study, trained(registered))
    views.states(states, args.json, plans=plans, epochs=None if args.json else views.epochs(study, states))
    found = preflight.load(study.paths)
    checked = [found[k] for k in dict.fromkeys(s.train_key for s in states) if k in found]
    if checked and not args.json:  # `status --json` stays one JSON document
        views.preflight(checked, "preflight (`sbrrepro preflight`):")
    if states and not args.json:
        print(f"watch the curves: tensorboard --logdir {views.shell_path(study.paths.root / 'runs')}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .prepare import check_dataset

    for summary in check_dataset(Path(args.study), args.dataset, args.data_root):
        print(summary.line())
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from .repair import repair

    done = repair(Path(args.study))
    print(f"rebuilt the state store from the study's folders: {done.rows} row(s), {done.submissions} "
          f"submission(s); the damaged store is kept as {done.kept}")
    return 0


def cmd_import_stats(args: argparse.Namespace) -> int:
    from .server import import_stats
    from .study import Study

    stats = import_stats(Study.open(Path(args.study)), args.row, Path(args.stats))
    print(f"imported {len(stats)} stats for {args.row}; `sbrrepro collect` reports them")
    return 0


def cmd_local_server(args: argparse.Namespace) -> int:
    from .server import local_server
    from .study import Study

    text = json.dumps(local_server(Study.open(Path(args.study)), args.row), indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"stats: {args.out}")
    else:
        print(text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import jobs
    from .rows import trained
    from .study import Study

    study = Study.open(Path(args.study))
    cancelled = jobs.cancel(study, trained(study.select_rows(args.rows)))
    print(f"cancelled {len(cancelled)} job(s)" + "".join(f"\n  {k}" for k in cancelled))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from . import views
    from .collect import collect
    from .study import Study

    study = Study.open(Path(args.study))
    done = collect(study)
    if args.json:
        print(json.dumps(done.rows, indent=1))
    else:
        views.collected(study, done, tables=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import views
    from .collect import collect
    from .report import write_reports
    from .study import Study

    study = Study.open(Path(args.study))
    done = collect(study)
    views.collected(study, done)
    for path in write_reports(study, done):
        print(f"report: {path}")
    return 0


def cmd_plot_iou(args: argparse.Namespace) -> int:
    from .figures import iou_histograms, study_rows
    from .study import Study

    study = Study.open(Path(args.study))
    rows = study_rows(study, args.rows, "iou_histograms")
    out = Path(args.out) if args.out else study.paths.figure(rows[0][1].plan)
    for path in iou_histograms.draw(study.paths, rows, out, args.population):
        print(f"figure: {path}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from .params import Counts, count_plan, table
    from .plan import load_plans
    from .render import to_terminal

    plans = load_plans(_plans(args.plans))
    counts = Counts()  # plans share models: each counted once
    counted = {plan.name: (plan, count_plan(plan, counts)) for plan in plans}
    if args.json:
        print(json.dumps({name: [c.to_json() for c in rows] for name, (_, rows) in counted.items()}, indent=1))
        return 0
    print("\n\n".join(to_terminal(table(plan, rows)) for plan, rows in counted.values()))
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from .prepare import prepare
    from .speed import measure_rows

    if args.images < 1:
        raise UserError("command line", "--images", f"must be at least 1, got {args.images}")
    prepared = prepare(_request(args))
    results = []
    for rc, speed in measure_rows(prepared.study, [rc for _, rc in prepared.chosen], args.images):
        results.append({"plan": rc.plan, "row": rc.row, "label": rc.label, "key": rc.key, **dataclasses.asdict(speed)})
        if not args.json:
            print(f"{rc.plan} row {rc.row:<3} {rc.label:<18} {speed.line()}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


def cmd_plot_anchors(args: argparse.Namespace) -> int:
    from .figures import anchor_coverage

    table, written = anchor_coverage.plot(_plans([args.plan])[0], Path(args.study), args.out and Path(args.out),
                                          args.data_root, args.dataset, progress=not args.json)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    for label, data in table.items():
        print(f"{label}: {data['boxes']} ground-truth boxes; % with no anchor at IoU >= t")
        print("  " + "  ".join(f"{t:.2f}:{p:5.1f}" for t, p in zip(data["thresholds"], data["percent_without_anchor"])))
    print("figure: " + ", ".join(str(p) for p in written))
    return 0


def cmd_plot_curves(args: argparse.Namespace) -> int:
    from .figures import study_rows, training_curves
    from .study import Study

    study = Study.open(Path(args.study))
    out = Path(args.out) if args.out else study.paths.root / "figures" / "training-curves"
    for path in training_curves.draw(study.paths, study_rows(study, args.rows), out):
        print(f"figure: {path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import failures, render, submit, wait

    if args.timeout <= 0:
        raise UserError("command line", "--timeout", f"must be positive, got {args.timeout:g}")
    checkup = submit(args.cluster, args.data_root, args.weights, Path(args.folder))
    print(checkup.line(), flush=True)
    columns = wait(checkup, args.timeout)
    print(render(columns))
    failed = failures(columns)
    print(f"doctor: {failed} check(s) failed" if failed else "doctor: every check passed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "json", False) and args.command == "run" and not args.dry_run:
        parser().error("--json goes with --dry-run for `run`")
    try:
        return globals()[f"cmd_{args.command.replace('-', '_')}"](args)
    except UserError as e:
        print(f"sbrrepro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsbrrepro: interrupted; submitted jobs keep running (see `sbrrepro status`)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
