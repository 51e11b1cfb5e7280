from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE3 = REPO / "plans" / "sbr-cnn" / "table3.yaml"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "sbrrepro", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke scale on a small generated dataset (4 training, 2 validation images)."""
    from sbrrepro.configs import smoke_scale
    from sbrrepro.dataset import SyntheticSpec, ensure_dataset

    return smoke_scale(ensure_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec(train_images=4, val_images=2)))


@pytest.fixture
def cli():
    return run_cli


def slurm_up() -> bool:
    """Whether a SLURM cluster answers here (slurm/cluster.sh starts one)."""
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-t", "idle,mix,alloc", "-o", "%D"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() != ""


def slurm_profile(tmp_path: Path, **changes) -> Path:
    """slurm/local-test.yaml (the test cluster's profile) with `changes`."""
    import yaml

    profile = yaml.safe_load((REPO / "slurm" / "local-test.yaml").read_text())
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({**profile, **changes}))
    return path


# Held by a start time an hour away: submitted jobs and arrays that never run while a test looks at them.
HELD = {"begin": "now+1hour"}


@pytest.fixture(params=["local", "slurm"])
def executor(request):
    """Each executor in turn: the shared conformance suite runs against all of them."""
    from sbrrepro.cluster.local import LocalExecutor
    from sbrrepro.cluster.profile import load_cluster
    from sbrrepro.cluster.slurm import SlurmExecutor

    if request.param == "slurm":
        if not slurm_up():
            pytest.skip("no SLURM cluster answers here")
        return SlurmExecutor(load_cluster(str(REPO / "slurm" / "local-test.yaml")))
    return LocalExecutor(load_cluster(None))


def settle(executor, job_id: str, folder: Path, timeout: float = 120) -> str:
    """Wait until the job has finished, failed or been cancelled; return which."""
    from sbrrepro.cluster import CANCELLED, FAILED, FINISHED

    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = executor.state(job_id, folder)
        if state in (FINISHED, FAILED, CANCELLED):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def interrupt(executor, job_id: str) -> None:
    """Preempt a job as the cluster would: the signal submitit's Checkpointable answers by
    checkpointing and requeueing."""
    import os

    import submitit
    from submitit.local.local import LocalJobEnvironment

    if executor.kind == "slurm":
        submitit.SlurmJob(Path("/nonexistent"), job_id)._interrupt()
    else:  # the job id is submitit's local controller; the signal goes to its tasks
        children = Path(f"/proc/{job_id}/task/{job_id}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), LocalJobEnvironment._usr_sig())


def require_tool(name: str) -> str:
    """The path of a program a test needs (pdflatex, chromium): skipped where it is missing, except
    where SBRREPRO_REQUIRE_TOOLS is set (CI installs them, so there a missing one fails)."""
    import os

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian's packages: see scripts/report-tools.sh)"
        if os.environ.get("SBRREPRO_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def compile_latex(tables: list[Path], folder: Path) -> subprocess.CompletedProcess:
    """pdflatex on one document that inputs every table of `tables`: each file copied beside it."""
    pdflatex = require_tool("pdflatex")
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for i, path in enumerate(tables):
        (folder / f"t{i}.tex").write_text(path.read_text())
        inputs.append(rf"\input{{t{i}.tex}}\clearpage")
    (folder / "doc.tex").write_text("\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}",
                                               r"\usepackage{booktabs,amssymb,graphicx}", r"\begin{document}",
                                               *inputs, r"\end{document}", ""]))
    return subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def open_in_browser(page: Path, folder: Path) -> tuple[dict, Path]:
    """Open an HTML page in headless Chromium: what the loaded page holds (tables, table cells,
    images and how many of them decoded, from a copy of the page with a probe script that writes its
    findings into the DOM), and a screenshot of it."""
    import json
    import re

    chromium = require_tool("chromium")
    folder.mkdir(parents=True, exist_ok=True)
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-probe',JSON.stringify({tables:document.querySelectorAll('table').length,"
             "cells:document.querySelectorAll('td').length,images:i.length,"
             "decoded:i.filter(x=>x.complete&&x.naturalWidth>0).length,"
             "width:Math.max(...i.map(x=>x.naturalWidth),0)}));});</script>")
    probed = folder / "probed.html"
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={folder / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True,
                         timeout=120)
    found = re.search(r"data-probe=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    shot = folder / "screenshot.png"
    subprocess.run([chromium, *flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    return json.loads(found.group(1).replace("&quot;", '"')), shot
