"""The `sbrrepro` command: run, preflight, status, doctor, cancel, collect, report, repair, check-data,
import-stats, local-server, params, speed, plot-iou, plot-curves, plot-anchors.

Data flows plan -> configs -> jobs -> results -> report; each command parses its arguments, calls
its stage and prints. Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .vocabulary import FRAMEWORKS

DEFAULT_STUDY = Path("studies/default")
DATASET_HELP = ("a dataset profile (YAML: train/val annotation files and image folders) to train and evaluate on "
                "instead of COCO (full scale) or the embedded dataset (--smoke)")


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


def _unrun_state(plan, row) -> dict:
    """A cited or derived row, as `status` and the dry run show it."""
    if row.cited is not None:
        return {"plan": plan.name, "row": row.number, "label": row.label, "state": "cited", "cited": row.cited}
    return {"plan": plan.name, "row": row.number, "label": row.label, "state": "derived",
            "derived": f"row {row.derived[0]} - row {row.derived[1]}"}


def _epochs(study, states) -> dict[str, str]:
    """The epoch each running training has reached, by key."""
    from . import jobs
    from .progress import epoch

    return {s.key: e for s in states if s.state == jobs.RUNNING
            and (e := epoch(study.paths.run(s.train_key), Path(s.config))) is not None}


def _print_states(states, as_json: bool, todo: set[str] | None = None, plans: list | None = None,
                  epochs: dict[str, str] | None = None) -> None:
    """A line per row and seed, or with as_json a JSON list; `todo` (dry run) marks what would be
    submitted; the cited and derived rows of `plans` are shown after the rows with jobs. On a
    terminal each line is cut to its width."""
    from .progress import fit, summary

    others = [_unrun_state(plan, row) for plan in plans or [] for row in plan.unrun_rows]
    if as_json:
        extra = (lambda s: {"would_submit": s.key in todo}) if todo is not None else (lambda s: {})
        print(json.dumps([{**s.to_json(), **extra(s)} for s in states] + others, indent=1))
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 10**6
    label_width = max(map(len, [*(s.label for s in states), *(o["label"] for o in others)]), default=5)
    key_width = max((len(s.key) for s in states), default=0)
    seeded = len({s.seed for s in states}) > 1
    epochs = epochs or {}
    for s in states:
        job = f"{s.executor} job {s.job_id}" if s.job_id else ""
        shared = f"evaluates {s.train_key}" if s.eval_only else ""
        seed = f"seed {s.seed:<3}" if seeded else ""
        state = f"{s.state} ({epochs[s.key]})" if s.key in epochs else s.state
        print(fit(f"{s.plan:<18} row {s.row:<3} {seed}{s.label:<{label_width}}  {state:<8} {s.key:<{key_width}} "
                  f"{job:<18} {shared}".rstrip(), width))
        for upload in s.uploads:
            print(f"    for the evaluation server: {upload}")
        if s.log_tail:
            print(f"    {s.log}:\n" + "\n".join("    | " + line for line in s.log_tail.splitlines()))
    for o in others:
        print(fit(f"{o['plan']:<18} row {o['row']:<3} {o['label']:<{label_width}}  {o['state']:<8} "
                  f"{o.get('cited') or o['derived']}", width))
    if todo is None and states:
        print(fit(summary(states, epochs), width))


def _trained(rows: list) -> list:
    """The row configs of (plan file, row config) pairs that run jobs."""
    from .zoo import MODELS

    return [rc for _, rc in rows if MODELS[rc.model].trains]


def cmd_run(args: argparse.Namespace) -> int:
    from . import jobs, preflight
    from .costs import summarize
    from .executors import load_profile, make_executor
    from .prepare import prepare
    from .study import select

    profile = load_profile(args.cluster)
    executor = make_executor(profile)
    prepared = prepare(_plans(args.plans), Path(args.study), args.smoke, args.epochs, args.data_root, args.dry_run,
                       args.dataset, args.seeds, args.rows, args.framework, weights=profile.weights)
    study, trained = prepared.study, prepared.trained
    shown = prepared.plans  # whose rows without jobs (counted, cited, derived) are told apart
    if args.rows:  # every row is registered; only these are submitted (with the trainings they need)
        chosen = set(select([rc for _, rc in trained], args.rows, "command line"))
        trained, shown = [(row, rc) for row, rc in trained if rc in chosen], []
    rows = [rc for _, rc in trained]
    if args.dry_run:
        todo = jobs.would_submit(study, rows, args.retry_failed)
        _print_states(jobs.states(study, rows), args.json, todo, shown)
        if not args.json:
            s, costs = summarize(trained, study.paths, study.scale, executor.profile.time_min)
            print(f"dry run: {s.rows} row(s), {s.trainings} unique training(s), {s.evaluations} "
                  f"evaluation-only job(s); would submit {len(todo)} job(s); nothing submitted")
            if shown and (counted := len(prepared.rows) - len(trained)):
                print(f"{counted} row(s) need no job: their numbers are counted or computed "
                      "(`sbrrepro params`, `sbrrepro collect`)")
            unrun = [row for plan in shown for row in plan.unrun_rows]
            if unrun:
                cited = sum(row.cited is not None for row in unrun)
                print(f"{cited} cited row(s) (another paper's published numbers, no verdict) and "
                      f"{len(unrun) - cited} derived line(s) (computed from other rows by `sbrrepro collect`): no job")
            _print_costs(s, costs, study.scale, profile)
            if missing := sorted(u for u, p in prepared.weights.items() if not p.exists()):
                print(f"weights `run` will fetch into {_shell_path(next(iter(prepared.weights.values())).parent)} "
                      f"before submitting: {', '.join(missing)}")
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
        return _wait(study, rows)
    _print_states(jobs.states(study, rows), False)
    return 0


def _print_costs(s, costs: dict, scale: str, profile) -> None:
    """The cost of what a dry run would submit: in all, and per training with its basis."""
    from .costs import PAPER
    from .zoo import COST_BASIS

    if s.hours is None:
        print("cost: unknown until measured (`collect` measures finished runs)")
        return
    unit = "GPU-hours" if scale == "full" else "process-hours"
    print(f"cost: {s.hours:.1f} {unit} for the unique trainings; one training per row would take "
          f"{s.hours_one_per_row:.1f} (saved: {s.hours_one_per_row - s.hours:.1f})")
    if scale != "full":
        return
    requeues = sum(c.requeues for c in costs.values())
    print(f"checkpoints: at most {s.checkpoint_GB:.1f} GB on disk (each training keeps its last, and writes the next "
          f"beside it); requeues under {profile.name}'s {profile.time_min} min limit: {requeues} in all")
    for key, c in costs.items():
        print(f"  {key:<28} {c.hours:8.1f} {unit}  {c.checkpoint_GB:5.2f} GB  {c.requeues} requeue(s)  ({c.basis})")
    if any(c.basis.startswith(PAPER) for c in costs.values()):
        print(f"{PAPER}: {COST_BASIS}")


def _image_size(text: str | None) -> tuple[int, int] | None:
    try:
        size = None if text is None else tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise UserError("command line", "--image-size", f"{text!r}: give WIDTHxHEIGHT in pixels, each at least 32, "
                        "e.g. 1333x800")
    return size


def cmd_preflight(args: argparse.Namespace) -> int:
    from . import preflight
    from .executors import load_profile, make_executor
    from .prepare import prepare, scale_of
    from .study import select

    size = _image_size(args.image_size)
    if args.steps < 1:
        raise UserError("command line", "--steps", f"must be at least 1, got {args.steps}")
    profile = load_profile(args.cluster)
    # The data is the preflight's own (COCO's first images, else the embedded set): no data check; the
    # weights are fetched unless the models start from random ones.
    prepared = prepare(_plans(args.plans), Path(args.study), False, data_root=args.data_root, dry_run=True,
                       wanted=args.rows, framework=args.framework, weights=profile.weights,
                       fetch_weights=not args.random_init)
    trained = prepared.trained
    if args.rows:
        chosen = set(select([rc for _, rc in trained], args.rows, "command line"))
        trained = [(row, rc) for row, rc in trained if rc in chosen]
    trainings: dict[str, tuple[str, list[str]]] = {}
    for _, rc in trained:
        config, needed = trainings.get(rc.train_key, (str(rc.train_path), []))
        trainings[rc.train_key] = (config, [*needed, f"{rc.plan}:{rc.row}"])
    scale = scale_of(Path(args.study), False, None, args.data_root)
    coco = [scale.data_root / scale.files("train", row.recipe["train_split"])[0] for row, _ in trained]
    embedded = None if all(p.exists() for p in coco) else str(preflight.embedded_data(prepared.study))
    data = "COCO" if embedded is None else f"the embedded dataset (no COCO at {scale.data_root})"
    print(f"preflight: {len(trainings)} training(s) on {profile.name}, {data}", flush=True)
    found = preflight.submit_and_wait(prepared.study, trainings, make_executor(preflight.one_device(profile)),
                                      size=size, steps=args.steps, embedded=embedded, random_init=args.random_init,
                                      gpu_memory_GB=profile.gpu_memory_GB)
    for f in found:
        print(f"{f.key} ({', '.join(f.rows)}): {f.line()}")
    print(f"recorded in {_shell_path(prepared.study.paths.preflight)}")
    return 0 if all(f.ok for f in found) else 1


def _wait(study, rows, poll_s: float = 5.0) -> int:
    """Wait for every row; print each change of a job's state as a line. On a terminal, a progress
    line (rows done of rows, the epoch of each running training) is redrawn in place under them."""
    from . import jobs
    from .progress import fit, summary

    tty = sys.stdout.isatty()
    seen: dict[str, str] = {}
    while True:
        states = jobs.states(study, rows)
        changes = []
        for s in states:
            if seen.get(s.key) != s.state:
                seen[s.key] = s.state
                changes.append(f"{time.strftime('%H:%M:%S')} {s.key}: {s.state}")
        if tty:
            sys.stdout.write("\r\033[K")  # the progress line goes, the changes print above its next one
        for line in changes:
            print(line, flush=True)
        if all(s.state in (jobs.DONE, jobs.AWAITING, jobs.FAILED, jobs.CANCELLED) for s in states):
            for s in states:
                if s.state == jobs.AWAITING:
                    print(f"{s.plan} row {s.row} awaits the evaluation server: upload {', '.join(s.uploads)}, then "
                          f"`sbrrepro import-stats {s.plan}:{s.row} STATS.json`")
            failed = [s for s in states if s.state in (jobs.FAILED, jobs.CANCELLED)]
            for s in failed:
                print(f"{s.state}: {s.plan} row {s.row} ({s.key}); log: {s.log}", file=sys.stderr)
            return 1 if failed else 0
        if tty:
            sys.stdout.write(fit(summary(states, _epochs(study, states)), shutil.get_terminal_size().columns))
            sys.stdout.flush()
        time.sleep(poll_s)


def cmd_status(args: argparse.Namespace) -> int:
    from . import jobs, preflight
    from .plan import load_plan
    from .study import Study

    study = Study.open(Path(args.study))
    registered = study.select_rows(args.rows) if args.rows else study.rows()
    # the cited and derived lines run nothing and are not rows of the store: shown with whole plans only
    plans = [] if args.rows else [load_plan(p) for p in dict.fromkeys(p for p, _ in registered)]
    states = jobs.states(study, _trained(registered))
    _print_states(states, args.json, plans=plans, epochs=None if args.json else _epochs(study, states))
    found = preflight.load(study.paths)
    checked = [found[k] for k in dict.fromkeys(s.train_key for s in states) if k in found]
    if checked and not args.json:
        print("preflight (`sbrrepro preflight`):")
        for f in checked:
            print(f"  {f.key} ({', '.join(f.rows)}): {f.line()}")
    if states and not args.json:  # `status --json` stays one JSON document
        print(f"watch the curves: tensorboard --logdir {_shell_path(study.paths.root / 'runs')}")
    return 0


def _shell_path(path: Path) -> str:
    """`path` as a user would type it here: relative to the working folder where it lies inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def cmd_check_data(args: argparse.Namespace) -> int:
    from .datacheck import Split, check
    from .dataset import ensure_dataset
    from .prepare import data_cache, scale_of
    from .profiles import built_in

    smoke = args.dataset == built_in(smoke=True)
    scale = scale_of(Path(args.study), smoke, None, args.data_root, args.dataset)
    if smoke:
        ensure_dataset(scale.data_root.parent)
    roles = ("train", "val")
    splits = {role: scale.files(role, split) for role, split in zip(roles, ("train2017", "val2017"))}
    for role, (ann, images) in splits.items():
        summary = check(Split(role, scale.data_root / ann, scale.data_root / images), data_cache(),
                        max_pixels=scale.profile and scale.profile.max_image_pixels)
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
    from .prepare import scale_of
    from .server import local_server
    from .study import Study

    study = Study.open(Path(args.study))
    stats = local_server(study, args.row, scale_of(study.root, True, None, None).data_root)
    text = json.dumps(stats, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"stats: {args.out}")
    else:
        print(text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import jobs
    from .study import Study

    study = Study.open(Path(args.study))
    cancelled = jobs.cancel(study, _trained(study.select_rows(args.rows) if args.rows else study.rows()))
    print(f"cancelled {len(cancelled)} job(s)" + "".join(f"\n  {k}" for k in cancelled))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from .collect import collect
    from .render import to_terminal
    from .study import Study

    study = Study.open(Path(args.study))
    done = collect(study)
    if args.json:
        print(json.dumps(done.rows, indent=1))
        return 0
    tty = sys.stdout.isatty()
    for table in done.tables.values():
        print(to_terminal(table, shutil.get_terminal_size().columns if tty else None, styled=tty), end="\n\n")
    _print_collected(study, done)
    return 0


def _print_collected(study, done) -> None:
    print(f"results: {done.results} ({study.paths.results_csv.name}, {study.paths.results_parquet.name} beside it)")
    for path in done.reports:
        print(f"table: {path}")
    for path in done.figures:
        print(f"figure: {path}")
    for plan, why in done.not_drawn.items():
        print(f"figure {plan}: not drawn yet: {why}")


def cmd_report(args: argparse.Namespace) -> int:
    from .collect import collect
    from .report import write_reports
    from .study import Study

    study = Study.open(Path(args.study))
    done = collect(study)
    _print_collected(study, done)
    for path in write_reports(study, done):
        print(f"report: {path}")
    return 0


def _figure_rows(study, kind: str, wanted: list[str] | None) -> list:
    """The rows to draw: those asked for, else every row of the study's figure plans of `kind`."""
    from .collect import one_per_row
    from .plan import load_plan

    if wanted:
        return one_per_row(study.select_rows(wanted))  # a row of several seeds: its first
    plans = {p for p, _ in study.rows()}
    of_kind = {p for p in plans if load_plan(p).figure == kind}
    rows = one_per_row([(p, rc) for p, rc in study.rows() if p in of_kind])
    if not rows:
        raise UserError(str(study.root), None, f"no {kind} figure plan in this study (e.g. `sbrrepro run "
                        "plans/sbr-cnn/fig3.yaml`); or name the rows with --rows")
    return rows


def cmd_plot_iou(args: argparse.Namespace) -> int:
    from .figures import iou_histograms
    from .study import Study

    study = Study.open(Path(args.study))
    rows = _figure_rows(study, "iou_histograms", args.rows)
    out = Path(args.out) if args.out else study.paths.figure(rows[0][1].plan)
    for path in iou_histograms.draw(study.paths, rows, out, args.population):
        print(f"figure: {path}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from .metrics import METRICS
    from .params import Counts, count_plan
    from .plan import load_plans

    plans = load_plans(_plans(args.plans))
    counts = Counts()  # plans share models: each counted once
    counted = {plan.name: count_plan(plan, counts) for plan in plans}
    if args.json:
        print(json.dumps({name: [c.to_json() for c in rows] for name, rows in counted.items()}, indent=1))
        return 0
    for name, rows in counted.items():
        print(name)
        for c in rows:
            cells = []
            for m, ours in c.ours.items():
                d, published = METRICS[m].decimals, c.published[m]
                paper = "–" if published is None else f"{published:,.{d}f}"
                cells.append(f"{METRICS[m].label}: ours {ours:,.{d}f}  paper {paper}")
            note = f"  ({c.note})" if c.note and c.verdict != "✓" else ""
            print(f"  row {c.row:<3} {c.label:<18} {c.trainable:>12,}  {'  '.join(cells)}  {c.verdict}{note}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from .prepare import prepare
    from .speed import measure_rows

    if args.images < 1:
        raise UserError("command line", "--images", f"must be at least 1, got {args.images}")
    prepared = prepare(_plans(args.plans), Path(args.study), args.smoke, args.epochs, args.data_root,
                       dataset=args.dataset, framework=args.framework)
    results = []
    for rc, speed in measure_rows(prepared.study, [rc for _, rc in prepared.trained], args.images):
        results.append({"plan": rc.plan, "row": rc.row, "label": rc.label, "key": rc.key, **dataclasses.asdict(speed)})
        if not args.json:
            weights = "trained" if speed.trained else "untrained (initial weights)"
            print(f"{rc.plan} row {rc.row:<3} {rc.label:<18} {speed.images_per_s:7.2f} img/s  "
                  f"peak {speed.peak_memory_GB:.2f} GB ({speed.memory_kind})  {weights}  on {speed.device}",
                  flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


def cmd_plot_anchors(args: argparse.Namespace) -> int:
    from .configs import full_scale, write_configs
    from .figures import anchor_coverage
    from .layout import StudyPaths
    from .plan import load_plan
    from .profiles import load_profile
    from .reader import read_json

    plan = load_plan(_plans([args.plan])[0])
    if plan.figure != "anchor_coverage":
        raise UserError(str(plan.path), "figure", "not an anchor_coverage figure plan (see plans/sbr-cnn/fig1.yaml)")
    paths = StudyPaths(Path(args.study).resolve())
    rows = [(str(plan.path), rc) for rc in write_configs(plan, full_scale(Path("coco")), paths)]
    out = Path(args.out) if args.out else paths.figure(plan.name)
    profile = load_profile(args.dataset) if args.dataset else None
    written = anchor_coverage.draw(paths, rows, out, data_root=args.data_root, progress=not args.json,
                                   profile=profile)
    table = read_json(written[-1])
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    for label, data in table.items():
        print(f"{label}: {data['boxes']} ground-truth boxes; % with no anchor at IoU >= t")
        print("  " + "  ".join(f"{t:.2f}:{p:5.1f}" for t, p in zip(data["thresholds"], data["percent_without_anchor"])))
    print("figure: " + ", ".join(str(p) for p in written))
    return 0


def cmd_plot_curves(args: argparse.Namespace) -> int:
    from .collect import one_per_row
    from .figures import training_curves
    from .study import Study

    study = Study.open(Path(args.study))
    rows = study.select_rows(args.rows) if args.rows else study.rows()
    trained = _trained(rows)  # not the rows only counted
    rows = [(p, rc) for p, rc in rows if rc in trained]
    out = Path(args.out) if args.out else study.paths.root / "figures" / "training-curves"
    for path in training_curves.draw(study.paths, one_per_row(rows), out):
        print(f"figure: {path}")
    return 0


class _Version(argparse.Action):
    """--version: sbrrepro's version and commit, then the pinned stack's versions (read only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print sbrrepro's version and commit, and the "
                         "versions of its stack, then exit")

    def __call__(self, p: argparse.ArgumentParser, *_) -> None:
        from . import versions

        found = versions.stack()
        print(f"sbrrepro {found.pop('sbrrepro')} (commit {versions.commit() or 'unknown'})")
        print(", ".join(f"{name} {v or 'not installed'}" for name, v in found.items()))
        p.exit()


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbrrepro", description="Reproduce instance-segmentation papers' tables on "
                                "MMDetection, on this machine or a SLURM cluster: `sbrrepro run plans/table5.yaml`, "
                                "then `sbrrepro status` and `sbrrepro collect`.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)

    def study_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--study", default=str(DEFAULT_STUDY), help="study folder (default: %(default)s)")

    def rows_arg(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--rows", nargs="+", metavar="ROW", help=f"{what}, each N (the only plan's row N), PLAN:N "
                        "(e.g. sbr-cnn/table3:4) or PLAN:N@SEED (one seed)")

    run = sub.add_parser("run", help="write each plan row's config and submit what is not done or running")
    run.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table3.yaml")
    study_arg(run)
    run.add_argument("--smoke", action="store_true",
                     help="scaled down: generated dataset, ResNet-18 from scratch, small images, few epochs")
    run.add_argument("--cluster", help="cluster profile: a YAML file or a name in slurm/ (default: this machine)")
    run.add_argument("--epochs", type=int, help="train every row this many epochs instead (lr steps scaled "
                     "alike): a quick check of the whole path")
    run.add_argument("--data-root", help="COCO folder for full scale (default: $SBRREPRO_COCO or data/coco)")
    run.add_argument("--dataset", help=DATASET_HELP)
    run.add_argument("--seeds", type=int, help="train every row with seeds 0 .. N-1 (each a training of its own); "
                     "ours is then their mean ± std (default: the plans' seeds)")
    run.add_argument("--framework", choices=FRAMEWORKS, help="build every row with this MMDetection's model "
                     "settings instead of those of the one its paper's numbers came from (e.g. mmdet-3.3: the era's "
                     "effect); rows so built are footnoted")
    run.add_argument("--dry-run", action="store_true", help="write the configs, print what would be submitted")
    run.add_argument("--wait", action="store_true", help="wait until every row is done or failed")
    run.add_argument("--retry-failed", action="store_true", help="submit failed trainings again")
    run.add_argument("--json", action="store_true", help="with --dry-run: print a JSON list of rows")
    rows_arg(run, "submit only these rows (and the trainings they need); every row of the plans is registered, "
             "and a later run without --rows submits the rest")
    run.set_defaults(func=cmd_run)

    pre = sub.add_parser("preflight", help="before GPU-hours: each unique full-scale training takes a few real "
                         "steps and one prediction on one device of the profile (s/iter, memory, fits)")
    pre.add_argument("plans", nargs="+", help="plan files, e.g. plans/groie/table2.yaml")
    study_arg(pre)
    pre.add_argument("--cluster", help="cluster profile: one of its GPUs per training (default: this machine)")
    pre.add_argument("--data-root", help="COCO folder (default: $SBRREPRO_COCO or data/coco; without COCO, the "
                     "embedded dataset at the given size)")
    pre.add_argument("--steps", type=int, default=3, help="timed training steps, after 2 not timed (default: 3)")
    pre.add_argument("--image-size", default=None, metavar="WxH", help="every training image resized to this "
                     "(default: the row's own largest, e.g. 1333x800)")
    pre.add_argument("--random-init", action="store_true", help="no pretrained weights (default: load them)")
    pre.add_argument("--framework", choices=FRAMEWORKS, help="as run's --framework")
    rows_arg(pre, "preflight only these rows' trainings")
    pre.set_defaults(func=cmd_preflight)

    status = sub.add_parser("status", help="each row's state and job id")
    study_arg(status)
    status.add_argument("--json", action="store_true")
    rows_arg(status, "show only these rows (default: all)")
    status.set_defaults(func=cmd_status)

    doctor = sub.add_parser("doctor", help="before the first run: a short job on one node and one on two nodes "
                            "check torch, CUDA, the GPUs, mmcv's ops, an all-reduce, the data and the weights there")
    doctor.add_argument("--cluster", help="cluster profile: a YAML file or a name in slurm/ (default: this machine, "
                        "one job)")
    doctor.add_argument("--data-root", help="COCO folder the nodes must read (default: $SBRREPRO_COCO or data/coco)")
    doctor.add_argument("--weights", help="weights cache the nodes must read (default: the profile's weights, else "
                        "$SBRREPRO_WEIGHTS, else not checked)")
    doctor.add_argument("--folder", default="studies/doctor", help="where the jobs' files and logs go, a folder the "
                        "nodes share (default: %(default)s)")
    doctor.add_argument("--timeout", type=float, default=10, metavar="MIN", help="cancel the jobs not ended after "
                        "this many minutes, queueing included (default: %(default)s)")
    doctor.set_defaults(func=cmd_doctor)

    cancel = sub.add_parser("cancel", help="cancel the pending and running jobs of a study (or of --rows)")
    study_arg(cancel)
    rows_arg(cancel, "cancel only these rows' jobs (default: all)")
    cancel.set_defaults(func=cmd_cancel)

    collect = sub.add_parser("collect", help="metrics of finished runs -> results.json and tables (MD, LaTeX)")
    study_arg(collect)
    collect.add_argument("--json", action="store_true")
    collect.set_defaults(func=cmd_collect)

    report = sub.add_parser("report", help="collect, then one self-contained HTML page and one Markdown page per "
                            "paper of the study (summary, tables, figures, setups, config changes, failures)")
    study_arg(report)
    report.set_defaults(func=cmd_report)

    checkdata = sub.add_parser("check-data", help="check a dataset's annotations and images before training on it")
    checkdata.add_argument("dataset", help="a dataset profile (YAML), coco2017 (with --data-root) or shapes (the "
                           "embedded dataset, made in the study)")
    checkdata.add_argument("--data-root", help="COCO folder for coco2017 (default: $SBRREPRO_COCO or data/coco)")
    study_arg(checkdata)
    checkdata.set_defaults(func=cmd_check_data)

    repair = sub.add_parser("repair", help="rebuild a damaged state store from the study's folders")
    study_arg(repair)
    repair.set_defaults(func=cmd_repair)

    stats = sub.add_parser("import-stats", help="store the stats COCO's evaluation server returned for a "
                           "test-dev row (`collect` then reports them)")
    stats.add_argument("row", help="the row, as PLAN:N (e.g. scnet/table1:9)")
    stats.add_argument("stats", help="JSON: per IoU type ('bbox', 'segm') the 12 numbers of COCOeval's summary, "
                       "as fractions")
    study_arg(stats)
    stats.set_defaults(func=cmd_import_stats)

    server = sub.add_parser("local-server", help="smoke studies: score a test-dev row's uploads as the evaluation "
                            "server would, against the embedded dataset's withheld annotations")
    server.add_argument("row", help="the row, as PLAN:N (e.g. scnet/table1:9)")
    study_arg(server)
    server.add_argument("--out", help="write the stats here (the file import-stats reads; default: print them)")
    server.set_defaults(func=cmd_local_server)

    params = sub.add_parser("params", help="each row's trainable parameters beside the published count")
    params.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table6.yaml")
    params.add_argument("--json", action="store_true", help="per plan and row: ours and published")
    params.set_defaults(func=cmd_params)

    speed = sub.add_parser("speed", help="inference images/s (batch 1, one device) and peak memory per row")
    speed.add_argument("plans", nargs="+", help="plan files, e.g. plans/sbr-cnn/table6.yaml")
    study_arg(speed)
    speed.add_argument("--smoke", action="store_true", help="the smoke-scale models on the embedded dataset")
    speed.add_argument("--data-root", help="COCO folder for full scale (default: $SBRREPRO_COCO or data/coco)")
    speed.add_argument("--dataset", help=DATASET_HELP)
    speed.add_argument("--images", type=int, default=20, help="timed images per row (default: %(default)s)")
    speed.add_argument("--epochs", type=int, help="as given to `run`: the rows' configs (and so their "
                       "trained weights) depend on it")
    speed.add_argument("--framework", choices=FRAMEWORKS, help="as given to `run`")
    speed.add_argument("--json", action="store_true")
    speed.set_defaults(func=cmd_speed)

    plot = sub.add_parser("plot-iou", help="Fig. 3: IoU distribution of the training RoIs")
    study_arg(plot)
    rows_arg(plot, "rows to draw (default: the rows of the study's iou_histograms figure plans, e.g. "
             "plans/sbr-cnn/fig3.yaml)")
    plot.add_argument("--out", help="output path without extension (default: STUDY/figures/<plan>, e.g. sbr-cnn-fig3)")
    plot.add_argument("--population", choices=("proposals", "positives"), default="proposals",
                      help="every proposal at the assigner, negatives included (the authors' histograms), or the "
                      "positive RoIs that train the heads (default: %(default)s)")
    plot.set_defaults(func=cmd_plot_iou)

    curves = sub.add_parser("plot-curves", help="training loss and validation AP per epoch of any rows")
    study_arg(curves)
    rows_arg(curves, "rows to draw (default: every trained row of the study; a row of several seeds: its first)")
    curves.add_argument("--out", help="output path without extension (default: STUDY/figures/training-curves)")
    curves.set_defaults(func=cmd_plot_curves)

    anchors = sub.add_parser("plot-anchors", help="Fig. 1: %% of ground-truth boxes with no anchor above an IoU")
    anchors.add_argument("plan", nargs="?", default="plans/sbr-cnn/fig1.yaml", help="default: %(default)s")
    study_arg(anchors)
    anchors.add_argument("--data-root", help="COCO folder (default: $SBRREPRO_COCO; without either, the "
                         "embedded dataset)")
    anchors.add_argument("--dataset", help="a dataset profile (YAML): its training annotations instead of COCO's")
    anchors.add_argument("--out", help="output path without extension (default: STUDY/figures/sbr-cnn-fig1)")
    anchors.add_argument("--json", action="store_true")
    anchors.set_defaults(func=cmd_plot_anchors)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "json", False) and args.command == "run" and not args.dry_run:
        parser().error("--json goes with --dry-run for `run`")
    try:
        return args.func(args)
    except UserError as e:
        print(f"sbrrepro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsbrrepro: interrupted; submitted jobs keep running (see `sbrrepro status`)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
