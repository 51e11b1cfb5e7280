"""A study folder (its files: `layout.StudyPaths`) and its SQLite state store: which plan rows it
holds, and one line per submission (config, executor, job id, submitit folder, attempts, time).

Paths are stored relative to the study, so that a study copied or moved elsewhere keeps its jobs.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from .datasets import built_in
from .errors import UserError
from .files import atomic_write
from .layout import StudyPaths
from .rows import COUNTED, TRAINED, RowConfig
from .study_files import INT64, KEY, Text, read

SCHEMA_VERSION = 4  # PRAGMA user_version of state.sqlite; raise it when _SCHEMA changes, with a migration
# What brings a store of schema N to N + 1, so that a study keeps its jobs across sbrrepro updates.
_MIGRATIONS = {
    # each job's submitit folder: before job arrays, always runs/<key>/submitit
    1: ["ALTER TABLE runs ADD COLUMN folder TEXT NOT NULL DEFAULT ''",
        "UPDATE runs SET folder = 'runs/' || key || '/submitit'"],
    # a row may train with several seeds: one line per seed, the seed part of the row's identity
    2: ["ALTER TABLE rows RENAME TO rows_v2",
        "CREATE TABLE rows (plan TEXT NOT NULL, row INTEGER NOT NULL, plan_path TEXT NOT NULL, model TEXT NOT NULL, "
        "label TEXT NOT NULL, config TEXT NOT NULL, key TEXT NOT NULL, train_config TEXT NOT NULL, "
        "train_key TEXT NOT NULL, seed INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (plan, row, seed))",
        "INSERT INTO rows (plan, row, plan_path, model, label, config, key, train_config, train_key) "
        "SELECT plan, row, plan_path, model, label, config, key, train_config, train_key FROM rows_v2",
        "DROP TABLE rows_v2"],
    # a row's kind, decided when its plan is loaded: the rows of models that train nothing are counted
    3: lambda: ["ALTER TABLE rows ADD COLUMN kind TEXT NOT NULL DEFAULT 'trained'", _counted()],
}


def _counted() -> str:
    """The rows of the zoo's models that train nothing marked counted, for a store of before kinds (the
    zoo imported only then)."""
    from .zoo import MODELS, kind

    names = ", ".join(f"'{name}'" for name in MODELS if kind(name) == COUNTED)
    return f"UPDATE rows SET kind = 'counted' WHERE model IN ({names})"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    executor TEXT NOT NULL,
    job_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    submitted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    plan TEXT NOT NULL,
    row INTEGER NOT NULL,
    plan_path TEXT NOT NULL,
    model TEXT NOT NULL,
    label TEXT NOT NULL,
    config TEXT NOT NULL,
    key TEXT NOT NULL,
    train_config TEXT NOT NULL,
    train_key TEXT NOT NULL,
    seed INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'trained',
    PRIMARY KEY (plan, row, seed)
)
"""


# as _SCHEMA orders them
ROW_COLUMNS = "plan, row, plan_path, model, label, config, key, train_config, train_key, seed, kind"
_PATH = Text(r"[^\x00]{1,4096}", "a path")
# rows.json: a row as ROW_COLUMNS name its fields (no seed: a study of before seeds, seed 0; no kind: trained)
_ROWS = [{"plan": str, "row": INT64, "plan_path": _PATH, "model": str, "label": str, "config": _PATH, "key": KEY,
          "train_config": _PATH, "train_key": KEY, "seed?": INT64, "kind?": (TRAINED, COUNTED)}, ...]
_DEFAULTS = {"seed": 0, "kind": TRAINED}  # of the columns a rows.json of an older sbrrepro lacks


def made(meta: Path) -> dict:
    """study.json: what a study was made with (its scale and dataset), written once when it is made."""
    return read(meta, {"scale": ("full", "smoke"), "dataset?": (str, None)},
                'what the study was made with: {"scale": "full" or "smoke", "dataset": a dataset profile or null}',
                'write it again as such (e.g. {"scale": "full"}), or choose another folder with --study')


def saved_rows(path: Path) -> list[dict]:
    """rows.json: the plain copy of the store's rows that `repair` rebuilds them from."""
    return read(path, _ROWS, f"the study's rows, each with its {ROW_COLUMNS}",
                "move state.sqlite aside and run the plans again with `sbrrepro run PLAN... --dry-run`, which "
                "registers them and finds every job again")


class Named(Protocol):
    """What a row selector reads of a row: its plan's name, its number and its seed."""

    @property
    def plan(self) -> str: ...
    @property
    def row(self) -> int: ...
    @property
    def seed(self) -> int: ...


N = TypeVar("N", bound=Named)


def select(rows: list[N], wanted: list[str], where: str) -> list[N]:
    """The rows that `wanted` names, in its order: 'N' (in the only plan that has a row N),
    'PLAN:N' (e.g. 'sbr-cnn/table3:4'), each with all of its seeds, or one seed: 'PLAN:N@SEED'.
    `where` names what holds the rows, for the error a name that matches nothing gets."""
    chosen: dict[N, None] = {}  # in order, each once
    for w in wanted:
        named, _, seed = w.partition("@")
        plan, _, number = named.rpartition(":")
        found = [r for r in rows if str(r.row) == number and (not plan or r.plan == plan)
                 and (not seed or str(r.seed) == seed)]
        if len({r.plan for r in found}) != 1:
            have = ", ".join(dict.fromkeys(f"{r.plan}:{r.row}" for r in rows))
            problem = "is ambiguous" if found else "is not among the rows"
            raise UserError(where, "--rows", f"{w!r} {problem}; rows: {have}")
        chosen.update(dict.fromkeys(found))
    return list(chosen)


@dataclass(frozen=True)
class Submission:
    key: str
    config: str
    executor: str
    job_id: str  # an array task's is `<array id>_<task>`
    folder: Path  # submitit's folder of the job (shared by the tasks of an array)
    attempts: int
    submitted: float


class Study:
    def __init__(self, root: Path, scale: str, dataset: str | None = None) -> None:
        self.root = root
        self.scale = scale
        # what it trains and evaluates on: a dataset profile's name, or the scale's built-in dataset
        self.dataset = dataset or built_in(scale == "smoke")
        self.paths = StudyPaths(root)

    @classmethod
    def open(cls, root: Path, scale: str | None = None, dataset: str | None = None, create: bool = False) -> Study:
        """Open a study (with `create`, one that may be new: nothing is written until `make`);
        `scale` and `dataset` must match those it was made with."""
        root = root.resolve()  # jobs run elsewhere (another cwd, another node): paths are absolute
        meta = StudyPaths(root).meta
        if meta.exists():
            was = made(meta)
            study = cls(root, was["scale"], was.get("dataset"))
            if scale is not None and study.scale != scale:
                flag = "without --smoke" if study.scale == "full" else "with --smoke"
                raise UserError(str(root), "scale", f"this study was made at {study.scale} scale; run it {flag}, "
                                f"or choose another folder with --study")
            if dataset is not None and study.dataset != dataset:
                raise UserError(str(root), "dataset", f"this study trains on {study.dataset}, not {dataset}; "
                                "choose another folder with --study")
            with study._db():  # a state store of another sbrrepro version is refused here, before any write
                pass
            return study
        if not create:
            raise UserError(str(root), None, "no study here; `sbrrepro run PLAN` makes one (or pass --study DIR)")
        return cls(root, scale or "full", dataset)  # made by its first write (`make`)

    def make(self) -> None:
        """Make the study's folder and study.json where they are new: before its first file is written."""
        if not self.paths.meta.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(self.paths.meta, json.dumps({"scale": self.scale, "dataset": self.dataset,
                                                      "created": time.time()}))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The store, made if new; a damaged one (a full disk, a copy cut short) is one clear error."""
        try:
            with self._connected() as con:
                yield con
        except sqlite3.DatabaseError as e:
            if type(e) is not sqlite3.DatabaseError:  # locked, a constraint, a query of ours: not damage
                raise
            raise UserError(str(self.paths.state), None, f"the state store is damaged ({e}); `sbrrepro repair "
                            f"--study {self.root}` rebuilds it from the study's folders (the damaged file is "
                            "kept aside)") from None

    @contextmanager
    def _connected(self) -> Iterator[sqlite3.Connection]:
        self.make()
        con = sqlite3.connect(self.paths.state, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            version = con.execute("PRAGMA user_version").fetchone()[0]
            fresh = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if fresh:
                con.executescript(_SCHEMA + f"; PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in _MIGRATIONS:
                self._migrate(con)
            elif version != SCHEMA_VERSION:
                raise UserError(str(self.paths.state), None,
                                f"written by another version of sbrrepro (state schema {version}; this one "
                                f"reads {SCHEMA_VERSION}); run into a new folder with --study")
            yield con
        finally:
            con.close()

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        """Bring the store to SCHEMA_VERSION in one transaction (all steps or none), once even when
        several sbrrepro processes open it at the same time."""
        con.execute("BEGIN IMMEDIATE")
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            while version in _MIGRATIONS:
                steps = _MIGRATIONS[version]
                for statement in steps() if callable(steps) else steps:
                    con.execute(statement)
                version += 1
            con.execute(f"PRAGMA user_version = {version}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Exclusive right to submit: two `sbrrepro run` on one study never both submit."""
        self.make()
        with open(self.paths.submit_lock, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError(str(self.root), None, "another `sbrrepro run` is submitting to this study; "
                                "wait for it to finish") from None
            yield

    def register(self, *plans: tuple[Path, list[RowConfig]]) -> None:
        """Remember which plan rows this study holds and the training each row needs (in the store,
        and in its plain copy), for each (plan file, rows) in one transaction. `rows` are all of a
        plan's: its rows and seeds as last run replace those registered before."""
        with self._db() as con:
            con.execute("BEGIN IMMEDIATE")
            for plan_path, rows in plans:
                con.executemany("DELETE FROM rows WHERE plan = ?", {(r.plan,) for r in rows})
                self._insert_rows(con, [(r.plan, r.row, str(plan_path.resolve()), r.model, r.label,
                                         self._relative(r.path), r.key, self._relative(r.train_path), r.train_key,
                                         r.seed, r.kind) for r in rows])
            con.execute("COMMIT")
            every = con.execute(f"SELECT {ROW_COLUMNS} FROM rows ORDER BY plan, row, seed").fetchall()
        atomic_write(self.paths.rows, json.dumps([dict(zip(ROW_COLUMNS.split(", "), r)) for r in every], indent=1))

    @staticmethod
    def _insert_rows(con: sqlite3.Connection, rows: list[tuple]) -> None:
        con.executemany(f"INSERT OR REPLACE INTO rows ({ROW_COLUMNS}) VALUES ({', '.join('?' * 11)})", rows)

    def rebuild(self, rows: list[dict], submissions: list[tuple[str, str, str, str, Path, int, float]]) -> Path:
        """A new store holding `rows` (as `rows.json` has them) and `submissions` (key, config,
        executor, job id, folder, attempts, time); the old file is moved aside, its path returned."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.paths.state.with_name(f"{self.paths.state.name}.damaged-{stamp}")
        if self.paths.state.exists():  # gone altogether: nothing to keep
            self.paths.state.rename(kept)
        for suffix in ("-wal", "-shm"):  # SQLite's journal of the damaged file goes aside with it
            journal = self.paths.state.with_name(self.paths.state.name + suffix)
            if journal.exists():
                journal.rename(kept.with_name(kept.name + suffix))
        with self._db() as con:
            con.execute("BEGIN IMMEDIATE")
            self._insert_rows(con, [tuple(r.get(c, _DEFAULTS.get(c)) for c in ROW_COLUMNS.split(", ")) for r in rows])
            con.executemany("INSERT INTO runs (key, config, executor, job_id, folder, attempts, submitted) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(key, config, kind, job_id, self._relative(folder), attempts, when)
                             for key, config, kind, job_id, folder, attempts, when in submissions])
            con.execute("COMMIT")
        return kept

    def rows(self) -> list[tuple[str, RowConfig]]:
        """(plan file, row config) for every registered row and seed, in plan, row and seed order."""
        with self._db() as con:
            found = con.execute(f"SELECT {ROW_COLUMNS} FROM rows ORDER BY plan, row, seed").fetchall()
        return [(f[2], RowConfig(f[0], f[1], f[3], f[4], self.root / f[5], f[6], self.root / f[7], f[8], f[9], f[10]))
                for f in found]

    def select_rows(self, wanted: list[str] | None) -> list[tuple[str, RowConfig]]:
        """The registered rows that `wanted` names (see `select`; none named: every row), with their plan files."""
        if not wanted:
            return self.rows()
        plan_files = {rc: p for p, rc in self.rows()}
        return [(plan_files[rc], rc) for rc in select(list(plan_files), wanted, str(self.root))]

    def submissions(self) -> dict[str, Submission]:
        with self._db() as con:
            rows = con.execute("SELECT key, config, executor, job_id, folder, attempts, submitted FROM runs").fetchall()
        return {r[0]: Submission(r[0], r[1], r[2], r[3], self.root / r[4], r[5], r[6]) for r in rows}

    def record(self, executor: str, jobs: Iterable[tuple[str, str, str, Path]]) -> None:
        """Record submissions (key, config, job id, submitit folder) made together, in one
        transaction: all or none (a resubmission counts one more attempt)."""
        now = time.time()
        # folders relative to the study, which may move
        values = [(key, self._relative(Path(config)), executor, job_id, self._relative(folder), now)
                  for key, config, job_id, folder in jobs]
        with self._db() as con:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO runs (key, config, executor, job_id, folder, submitted) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET config=excluded.config, executor=excluded.executor, "
                "job_id=excluded.job_id, folder=excluded.folder, attempts=attempts+1, submitted=excluded.submitted",
                values,
            )
            con.execute("COMMIT")

    def _relative(self, path: Path) -> str:
        """Inside the study: relative to it; elsewhere absolute (root / an absolute path is that path)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
