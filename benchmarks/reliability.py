"""Reliability: kill `sbrrepro run` and its trainings at random moments, feed it malformed input, and
count what was lost.

    .venv/bin/python -m benchmarks.reliability [--kills 8] [--cluster slurm/local-test.yaml]

A small plan (SBR-CNN Table 3 rows 1 and 3, smoke scale, 3 epochs) is run into a fresh study while
`sbrrepro run` is SIGKILLed, alternately at a random moment and as soon as a submission of its
appears (between sbatch and the record of the job id, where it can be), then run once more
unhindered. Every training is then SIGKILLed once after its first checkpoint and resumed with
`--retry-failed` (its first attempt killed the same way). With a profile that sets
`array_parallelism` (slurm/local-test.yaml does), the trainings go out as job arrays, and killed
tasks are resubmitted, not whole arrays. Prints kills survived (and how many left a submission
unrecorded), duplicate submissions (single jobs and array tasks alike; must be 0), lost results
(must be 0), and malformed inputs tried and rejected cleanly. One training is instead cancelled with
`sbrrepro cancel` mid-training (it must stop, then resume when `run` submits it again), and the state
store is cut short once (`repair` must rebuild it with every job).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sbrrepro import jobs
from sbrrepro.layout import StudyPaths
from sbrrepro.study import Study
from tests.helpers import copy_plan
from tests.helpers import run_cli as cli


def status(study: Path) -> list[dict]:
    """Every row's state; none while the state store is damaged (before its repair)."""
    out = cli("status", "--study", str(study), "--json")
    return json.loads(out.stdout) if out.returncode == 0 else []


def unrecorded(study_dir: Path) -> int:
    """Submissions in the study that its state store does not hold: what a killed `run` left."""
    if not StudyPaths(study_dir).state.exists():
        return 0
    study = Study.open(study_dir)
    recorded = {(s.job_id, s.folder) for s in study.submissions().values()}
    found = jobs.traces(study, {rc.key for _, rc in study.rows()})
    return sum((t.job_id, t.folder) not in recorded for ts in found.values() for t in ts)


def killed_run(run: list[str], study: Path, wait_s: float, on_submission: bool) -> bool:
    """Start `run` and SIGKILL it after `wait_s`, or with `on_submission` as soon as submitit has
    left a new job pickle in the study; return whether it was still running to be killed."""
    def pickles() -> set[Path]:
        return set(study.rglob("*_submitted.pkl"))

    before = pickles()
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + wait_s
    while time.time() < deadline and proc.poll() is None and not (on_submission and pickles() != before):
        time.sleep(0.005 if on_submission else 0.05)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    return killed


def kill_job(state: dict, study: Path) -> None:
    """SIGKILL a training where it runs: the local controller and its tasks, or the SLURM job (an
    array's task alone)."""
    if state["executor"] == "slurm":
        subprocess.run(["scancel", "--signal=KILL", state["job_id"]], check=False)
        return
    pid = int(state["job_id"])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in [pid, *map(int, children)]:
        os.kill(p, signal.SIGKILL)


def mid_training(study: Path, s: dict) -> bool:
    """Whether the row's training runs, past its first checkpoint and before its last."""
    run = StudyPaths(study).run(s["key"])
    return s["state"] == "running" and run.checkpoint(1).exists() and not run.checkpoint(3).exists()


def kill_trainings(study: Path, killed: set[str], spared: int, stop: threading.Event) -> None:
    """SIGKILL each training but row `spared`'s once after its first checkpoint (before its last),
    until `stop`."""
    while not stop.wait(1):
        for s in status(study) if StudyPaths(study).state.exists() else []:
            if s["key"] not in killed and s["row"] != spared and mid_training(study, s):
                kill_job(s, study)
                killed.add(s["key"])


def cancel_mid_training(study: Path, row: int, timeout: float = 1200) -> tuple[str, bool]:
    """`sbrrepro cancel` the row's training once it is mid-training; return its key and whether it
    stopped: `cancelled` within 20 s, its job's processes gone, no done.json."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = next((s for s in status(study) if s["row"] == row), None)
        if s and mid_training(study, s):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f"row {row} never reached its second epoch")
    cli("cancel", "--study", str(study), "--rows", f"{s['plan']}:{row}")

    def stopped() -> bool:  # a local job's id is its controller's pid, reaped once it has ended
        gone = s["executor"] == "slurm" or not Path(f"/proc/{s['job_id']}").exists()
        return gone and next(x for x in status(study) if x["row"] == row)["state"] == "cancelled"

    deadline = time.time() + 20
    while not stopped() and time.time() < deadline:
        time.sleep(0.5)
    return s["key"], stopped() and not StudyPaths(study).run(s["key"]).done.exists()


def damage_and_repair(study: Path) -> bool:
    """Cut the state store short; True when `status` then says so in one line (exit 2), `repair`
    rebuilds it and `status` gives the same states as before."""
    before = status(study)
    state = StudyPaths(study).state
    state.write_bytes(state.read_bytes()[:1500])
    broken = cli("status", "--study", str(study))
    clean = broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1
    repaired = cli("repair", "--study", str(study)).returncode == 0
    return clean and repaired and [(s["key"], s["job_id"]) for s in status(study)] == [
        (s["key"], s["job_id"]) for s in before]


def malformed(tmp: Path) -> tuple[int, int]:
    """Malformed plans and profiles: (tried, rejected with one clean line and exit status 2)."""
    cases = {  # changes of the Table 3 plan
        "bad yaml": {"text": "rows: [\n"},
        "unknown field": {"colour": "red"},
        "wrong type": {"recipe": {"epochs": "twelve"}},
        "unknown model": {"rows.0.model": "yolo"},
        "missing published file": {"published": "../nowhere.csv"},
        "path in table name": {"table": "../../x"},
    }
    profiles = {"shell in partition": "executor: slurm\npartition: 'gpu; reboot'\n",
                "unknown executor": "executor: k8s\n"}
    tried = rejected = 0
    for i, case in enumerate([*cases.values(), *profiles.values()]):
        plan = copy_plan(tmp, "sbr-cnn/table3", name=f"bad{i}", **(case if i < len(cases) else {}))
        extra = []
        if i >= len(cases):
            profile = tmp / f"profile{i}.yaml"
            profile.write_text(case)
            extra = ["--cluster", str(profile)]
        study = tmp / f"bad-study{i}"
        r = cli("run", str(plan), "--smoke", "--dry-run", "--study", str(study), *extra)
        tried += 1
        clean = r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        rejected += clean and not study.exists()
    return tried, rejected


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=8, help="times `sbrrepro run` is killed")
    ap.add_argument("--cluster", help="cluster profile (default: this machine)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cluster = ["--cluster", args.cluster] if args.cluster else []

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = [1, 3]
        plan_path = copy_plan(tmp, "sbr-cnn/table3", rows=rows)
        study = tmp / "study"
        run = [sys.executable, "-m", "sbrrepro", "run", str(plan_path), "--smoke", "--epochs", "3",
               "--study", str(study), *cluster]

        killed_jobs: set[str] = set()  # trainings are killed from the start, alongside `run`
        cancelled_row = rng.choice(rows)  # its training is cancelled instead
        stop = threading.Event()
        killer = threading.Thread(target=kill_trainings, args=(study, killed_jobs, cancelled_row, stop))
        killer.start()
        try:
            started = time.time()
            cli(*run[3:], "--dry-run")  # how long `run` takes here before it submits
            span = 2 * (time.time() - started)
            kills = left_unrecorded = 0
            for i in range(args.kills):  # `run` killed at a random moment, or right after submitting
                kills += killed_run(run, study, rng.uniform(0.0, span), on_submission=i % 2 == 1)
                left_unrecorded += unrecorded(study) > 0
            subprocess.run(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            cancelled, stopped = cancel_mid_training(study, cancelled_row)
            rebuilt = damage_and_repair(study)
            subprocess.run(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # resubmits it

            retried = False
            deadline = time.time() + 1800
            while time.time() < deadline:
                states = status(study)
                if all(s["state"] in ("done", "failed") for s in states):
                    if all(s["state"] == "done" for s in states):
                        break
                    if not retried:  # the first retry is killed as it submits; the next one adopts
                        retried = True
                        kills += killed_run([*run, "--retry-failed"], study, span, on_submission=True)
                        left_unrecorded += unrecorded(study) > 0
                    else:
                        cli(*run[3:], "--retry-failed")
                time.sleep(1)
        finally:
            stop.set()
            killer.join()

        states = status(study)
        submissions = {k: len(t) for k, t in jobs.traces(Study.open(study), [s["key"] for s in states]).items()}
        expected = {k: 1 + (k in killed_jobs) + (k == cancelled) for k in submissions}
        duplicates = sum(max(0, n - expected[k]) for k, n in submissions.items())
        collected = json.loads(cli("collect", "--study", str(study), "--json").stdout)
        lost = len(rows) - sum(1 for r in collected if r["state"] == "done" and "bbox_AP" in r["metrics"])
        logs = {k: "".join(p.read_text() for p in StudyPaths(study).run(k).root.glob("*/*.log")) for k in killed_jobs}
        resumed = sum(1 for k in killed_jobs if "Auto resumed" in logs[k])
        cancelled_log = "".join(p.read_text() for p in StudyPaths(study).run(cancelled).root.glob("*/*.log"))
        tried, rejected = malformed(tmp)

    print(f"kills survived: {kills} of `sbrrepro run` ({left_unrecorded} left a submission unrecorded), "
          f"{len(killed_jobs)} of trainings ({resumed} resumed from their checkpoint)")
    print(f"jobs cancelled mid-training: 1, stopped: {int(stopped)}, resumed from their checkpoint: "
          f"{int('Auto resumed' in cancelled_log)}")
    print(f"state stores damaged: 1, rebuilt with every job: {int(rebuilt)}")
    print(f"duplicate submissions: {duplicates}")
    print(f"lost results: {lost}")
    print(f"malformed inputs: {tried} tried, {rejected} rejected cleanly")


if __name__ == "__main__":
    main()
