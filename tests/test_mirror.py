"""The tests mirror the package: each module sbrrepro/<m>.py has tests/unit/test_<m>.py, each module of
a subpackage sbrrepro/<p>/<m>.py has tests/unit/<p>/test_<m>.py (its __init__.py: test_<p>.py), and each
paper's plugins sbrrepro/models/<paper>/ have tests/models/<paper>/; but for the few that need none."""

from __future__ import annotations

from tests.helpers import REPO

PACKAGE, TESTS = REPO / "sbrrepro", REPO / "tests"
NEED_NONE = {
    "__init__.py": "the version only",
    "__main__.py": "`python -m sbrrepro` runs cli.main: every CLI test runs it so",
}
ELSEWHERE = {  # subpackages whose tests are laid out by what they build
    "zoo": "its models are built by the paper plans' tests (tests/plans/) and the plugins' (tests/models/)",
    "models": "one folder of tests per paper, tests/models/<paper>/ (checked below)",
    "templates": "rendered by tests/unit/test_render.py against golden files",
}


def _test_file(module: str) -> str:
    package, _, name = module.rpartition("/")
    name = name.removesuffix(".py")
    if name == "__init__":
        name = package
    return f"unit/{package + '/' if package else ''}test_{name}.py"


def test_every_module_has_its_test_file():
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() or p.name == "templates")
    assert set(packages) - set(ELSEWHERE) == {"cluster", "figures"}, "a new subpackage: mirror it in tests/unit/"
    modules = [p.name for p in PACKAGE.glob("*.py") if p.name not in NEED_NONE]
    modules += [f"{package}/{p.name}" for package in ("cluster", "figures") for p in (PACKAGE / package).glob("*.py")]
    missing = [f"sbrrepro/{m}: tests/{_test_file(m)}" for m in sorted(modules) if not (TESTS / _test_file(m)).is_file()]
    assert not missing, "modules without their test file:\n" + "\n".join(missing)


def test_every_papers_plugins_have_their_tests():
    papers = sorted(p.name for p in (PACKAGE / "models").iterdir() if (p / "__init__.py").exists())
    missing = [p for p in papers if not list((TESTS / "models" / p).glob("test_*.py"))]
    assert papers and not missing, f"plugin packages without tests/models/<paper>/: {missing}"


def test_no_test_file_is_left_outside_the_layout():
    stray = [p.name for p in TESTS.glob("test_*.py") if p.name != "test_mirror.py"]
    assert not stray, f"put {stray} under unit/ (a module's), plans/, models/<paper>/ or system/"
