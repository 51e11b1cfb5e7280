"""Reliability: kill `sbrrepro run` and its trainings at random moments, feed it malformed input, and
count what was lost.

    .venv/bin/python benchmarks/reliability.py [--kills 8] [--cluster slurm/local-test.yaml]

A small plan (SBR-CNN Table 3 rows 1 and 3, smoke scale, 3 epochs) is run into a fresh study while
`sbrrepro run` is SIGKILLed at random moments, then every training is SIGKILLed once after its
first checkpoint and resumed with `--retry-failed`. Prints kills survived, duplicate submissions
(must be 0), lost results (must be 0), and malformed inputs tried and rejected cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sbrrepro", *args], capture_output=True, text=True, **kw)


def status(study: Path) -> list[dict]:
    return json.loads(cli("status", "--study", str(study), "--json").stdout)


def kill_job(state: dict, study: Path) -> None:
    """SIGKILL a training where it runs: the local controller and its tasks, or the SLURM job."""
    if state["executor"] == "slurm":
        subprocess.run(["scancel", "--signal=KILL", state["job_id"]], check=False)
        return
    pid = int(state["job_id"])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in [pid, *map(int, children)]:
        os.kill(p, signal.SIGKILL)


def malformed(tmp: Path) -> tuple[int, int]:
    """Malformed plans and profiles: (tried, rejected with one clean line and exit status 2)."""
    good = yaml.safe_load((REPO / "plans" / "table3.yaml").read_text())
    cases = {
        "bad yaml": "rows: [\n",
        "unknown field": yaml.safe_dump({**good, "colour": "red"}),
        "wrong type": yaml.safe_dump({**good, "recipe": {**good["recipe"], "epochs": "twelve"}}),
        "unknown model": yaml.safe_dump({**good, "rows": [{"row": 1, "model": "yolo"}]}),
        "missing published file": yaml.safe_dump({**good, "published": "../nowhere.csv"}),
        "path in table name": yaml.safe_dump({**good, "table": "../../x"}),
    }
    profiles = {"shell in partition": "executor: slurm\npartition: 'gpu; reboot'\n",
                "unknown executor": "executor: k8s\n"}
    tried = rejected = 0
    for i, text in enumerate([*cases.values(), *profiles.values()]):
        plan = tmp / "plans" / f"bad{i}.yaml"
        plan.write_text(text if i < len(cases) else yaml.safe_dump(good))
        extra = []
        if i >= len(cases):
            profile = tmp / f"profile{i}.yaml"
            profile.write_text(text)
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
        shutil.copytree(REPO / "tables", tmp / "tables")
        shutil.copytree(REPO / "plans" / "recipes", tmp / "plans" / "recipes")
        plan = yaml.safe_load((REPO / "plans" / "table3.yaml").read_text())
        plan["rows"] = [plan["rows"][0], plan["rows"][2]]
        plan_path = tmp / "plans" / "t3.yaml"
        plan_path.write_text(yaml.safe_dump(plan))
        study = tmp / "study"
        run = [sys.executable, "-m", "sbrrepro", "run", str(plan_path), "--smoke", "--epochs", "3",
               "--study", str(study), *cluster]

        kills = 0
        for _ in range(args.kills):  # `run` killed at random moments, submitting or not
            proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, 4.0))
            if proc.poll() is None:
                proc.kill()
                kills += 1
            proc.wait()

        killed_jobs: set[str] = set()
        deadline = time.time() + 1800
        while time.time() < deadline:  # each training killed once after its first checkpoint
            states = status(study)
            for s in states:
                run_dir = study / "runs" / s["key"]
                if (s["key"] not in killed_jobs and s["state"] == "running"
                        and (run_dir / "epoch_1.pth").exists() and not (run_dir / "epoch_3.pth").exists()):
                    kill_job(s, study)
                    killed_jobs.add(s["key"])
            if all(s["state"] in ("done", "failed") for s in states):
                if all(s["state"] == "done" for s in states):
                    break
                cli("run", *run[4:], "--retry-failed")
            time.sleep(1)

        states = status(study)
        submissions = {s["key"]: len(list((study / "runs" / s["key"] / "submitit").glob("*_submitted.pkl")))
                       for s in states}
        expected = {k: 1 + (k in killed_jobs) for k in submissions}
        duplicates = sum(max(0, n - expected[k]) for k, n in submissions.items())
        collected = json.loads(cli("collect", "--study", str(study), "--json").stdout)
        lost = sum(1 for r in collected if r["state"] != "done" or "bbox_AP" not in r["metrics"])
        resumed = sum(1 for k in killed_jobs
                      if "Auto resumed" in "".join(p.read_text() for p in (study / "runs" / k).glob("*/*.log")))
        tried, rejected = malformed(tmp)

    print(f"kills survived: {kills} of `sbrrepro run`, {len(killed_jobs)} of trainings "
          f"({resumed} resumed from their checkpoint)")
    print(f"duplicate submissions: {duplicates}")
    print(f"lost results: {lost}")
    print(f"malformed inputs: {tried} tried, {rejected} rejected cleanly")


if __name__ == "__main__":
    main()
