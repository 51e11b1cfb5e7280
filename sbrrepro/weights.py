"""The pretrained weights a config loads, staged on the submitting machine before anything is submitted.

Compute nodes often have no internet, and MMEngine downloads a checkpoint such as
`torchvision://resnet50` when a job starts. So every checkpoint a written config loads is resolved
here, as MMEngine would resolve it, to a local file: one already in the weights cache, else one in
torch's hub cache (where MMEngine's own downloads land), else one fetched into the weights cache.
Its absolute path replaces the reference in the written config, after the key is computed (as the
data root does), so keys do not change. Nothing here imports torch or MMEngine: a dry run stays quick.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import UserError
from .reader import INPUT_BYTES, read_json

ENV = "SBRREPRO_WEIGHTS"
# Where a config names a checkpoint to load: an init_cfg's, a backbone's (deprecated) and the runner's.
KEYS = ("checkpoint", "pretrained", "load_from")
# The schemes whose checkpoint is loaded as the file is. mmcls:// is not staged: MMEngine rewrites that
# state dict after loading it, which a local path would skip; s3://, pavi:// and plain paths are left too.
SCHEMES = ("torchvision", "modelzoo", "open-mmlab", "openmmlab", "http", "https", "file")
# torch.hub's convention: a file named `name-<first hex digits of its sha256>.ext`.
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def folder(study_root: Path, configured: str | None = None) -> Path:
    """The weights cache: `configured` (a cluster profile's `weights`), else $SBRREPRO_WEIGHTS, else
    STUDY/weights; absolute, as the configs name its files."""
    return Path(configured or os.environ.get(ENV) or study_root / "weights").expanduser().resolve()


def torch_hub() -> Path:
    """Where torch.hub, and so MMEngine, keeps the checkpoints it downloads (torch.hub.get_dir()'s
    rule, without importing torch)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser().resolve() / "hub" / "checkpoints"


def _rewrite(node: Any, f: Callable[[str], str]) -> Any:
    """`node` with `f` applied to every string that names a checkpoint to load."""
    if isinstance(node, dict):
        return {k: f(v) if k in KEYS and isinstance(v, str) else _rewrite(v, f) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_rewrite(v, f) for v in node)
    return node


def urls(cfg: dict) -> list[str]:
    """The checkpoints `cfg` loads that are staged (see SCHEMES), as the config names them."""
    found: set[str] = set()

    def add(v: str) -> str:
        if "://" in v and v.partition("://")[0] in SCHEMES:
            found.add(v)
        return v

    _rewrite(cfg, add)
    return sorted(found)


def placed(cfg: dict, local: dict[str, Path]) -> dict:
    """`cfg` loading each checkpoint of `local` (reference -> file) from its local file."""
    return _rewrite(cfg, lambda v: str(local[v]) if v in local else v)


def _mmengine_table(name: str) -> dict[str, str]:
    spec = importlib.util.find_spec("mmengine")
    return read_json(Path(spec.submodule_search_locations[0]) / "hub" / name)


def source(url: str) -> str:
    """Where a checkpoint reference downloads from (http(s):// or file://), as MMEngine 0.10's
    CheckpointLoader resolves it (mmengine/runner/checkpoint.py)."""
    scheme, _, name = url.partition("://")
    if scheme in ("torchvision", "modelzoo"):
        table = _mmengine_table("torchvision_0.12.json")
        if name not in table:  # torchvision >= 0.13's names (resnet50.imagenet1k_v2): from torchvision itself
            try:
                from mmengine.runner.checkpoint import get_torchvision_models
                table = get_torchvision_models()
            except ImportError:
                pass
    elif scheme in ("open-mmlab", "openmmlab"):
        home = os.path.expanduser(os.getenv("MMENGINE_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"),
                                                                          "mmengine")))
        user = Path(home, "open_mmlab.json")  # a user's own names, over MMEngine's
        try:
            own = read_json(user, INPUT_BYTES, "JSON {name: url}") if user.is_file() else {}
        except OSError as e:  # e.g. no permission
            raise UserError(str(user), None, f"cannot read your checkpoint names: {e.strerror}") from None
        if not isinstance(own, dict) or not all(isinstance(v, str) for v in own.values()):
            raise UserError(str(user), None, "expected JSON {name: url}: your checkpoints' names and their URLs "
                            "or files under MMEngine's home")
        table = {**_mmengine_table("openmmlab.json"), **own}
        name = _mmengine_table("deprecated.json").get(name, name)
        if name in table and not table[name].startswith(("http://", "https://")):  # a file under MMEngine's home
            return Path(home, table[name]).as_uri()
    else:
        return url
    if name not in table:
        raise UserError(url, None, f"MMEngine knows no {scheme}:// checkpoint named {name!r}; give its URL or a "
                        "local file instead")
    return table[name]


def stage(urls: Iterable[str], cache: Path, fetch: bool) -> dict[str, Path]:
    """Each checkpoint reference -> its local file: the weights cache's, else torch hub's, else one
    fetched into `cache` (its hash checked where its name has one). Without `fetch` nothing is
    downloaded, and a missing file maps to where `run` will fetch it, so that a dry run writes the
    same configs as the run."""
    out = {}
    for url in urls:
        src = source(url)
        local = cache / Path(urllib.parse.urlparse(src).path).name
        # The weights cache first: once staged there, a config keeps its path whatever torch's cache holds.
        if not local.exists() and (hub := torch_hub() / local.name).exists():
            local = hub
        elif not local.exists() and fetch:
            _fetch(url, src, local)
        out[url] = local
    return out


def _fetch(url: str, src: str, dest: Path) -> None:
    """Download `src` to `dest` through a temporary file renamed into place: a failed or interrupted
    download, or one whose hash is not the one its name carries, leaves nothing (not even the folders
    made for it: a study that is not made yet stays unmade)."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # deepest first
    print(f"fetching {url} ({src}) into {dest.parent}", file=sys.stderr, flush=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        with urllib.request.urlopen(urllib.request.Request(src, headers={"User-Agent": "sbrrepro"}),
                                    timeout=60) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
        expected = HASH_IN_NAME.search(dest.name)
        if expected and not sha.hexdigest().startswith(expected[1]):
            raise UserError(url, None, f"{src} has sha256 {sha.hexdigest()[:len(expected[1])]}..., not the "
                            f"{expected[1]}... its name promises: not kept; fetch it again, or from another mirror")
        tmp.replace(dest)
    except OSError as e:  # no network, a refused URL, a timeout, a full disk: URLError is an OSError
        reason = getattr(e, "reason", None) or e.strerror or e
        raise UserError(url, None, f"cannot fetch {src} into {dest.parent} ({reason}): on a machine with internet "
                        f"download it into that folder as {dest.name}, or point ${ENV} (or the cluster profile's "
                        "`weights`) at a folder that has it") from None
    finally:
        tmp.unlink(missing_ok=True)
        if not dest.exists():
            for p in made:
                with contextlib.suppress(OSError):  # one that another process has put a file in is kept
                    p.rmdir()
