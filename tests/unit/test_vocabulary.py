"""sbrrepro.vocabulary: the names the plans, the command line, the zoo and the plugins share are these,
and importing them costs nothing (no torch)."""

from __future__ import annotations

import argparse

import pytest

from sbrrepro.arguments import parser
from sbrrepro.errors import UserError
from sbrrepro.plan import RECIPE_FIELDS
from sbrrepro.schema import validate
from sbrrepro.vocabulary import FRAMEWORK_KEY, FRAMEWORKS, L2C
from sbrrepro.zoo import MODELS, _frameworks
from tests.helpers import imported_by


def test_every_framework_has_its_era_settings() -> None:
    """Each framework a recipe may name is one the era table knows, the installed one included."""
    assert set(_frameworks.ERAS) == set(FRAMEWORKS)
    assert _frameworks.INSTALLED in FRAMEWORKS
    assert _frameworks.MARKER == FRAMEWORK_KEY


def test_recipe_framework_is_one_of_them() -> None:
    field = {"framework": RECIPE_FIELDS["framework"]}
    for name in FRAMEWORKS:
        assert validate({"framework": name}, field, "recipe.yaml") == {"framework": name}
    with pytest.raises(UserError, match=r"'mmdet-4\.0' is not one of: mmdet-1\.x, mmdet-2\.8, mmdet-3\.3"):
        validate({"framework": "mmdet-4.0"}, field, "recipe.yaml")


@pytest.mark.parametrize("command", ["run", "preflight", "speed"])
def test_command_line_framework_choices(command: str) -> None:
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    (action,) = [a for a in commands.choices[command]._actions if a.dest == "framework"]
    assert tuple(action.choices) == FRAMEWORKS


def test_l2c_options_of_the_fcc_models() -> None:
    """The FCC heads' options take exactly the L2C convolutions (beside none and the plain FC)."""
    for model in ("r3_cnn", "sbr_cnn"):
        spec = MODELS[model].options["l2c"]
        assert [v for v in ("none", *L2C) if spec.check(v) is None] == ["none", *L2C]
        assert spec.check("5x5") is not None
    head = MODELS["head_layer"].options["head"]
    assert all(head.check(v) is None for v in ("fc", *L2C))


def test_import_is_light() -> None:
    assert imported_by("sbrrepro.vocabulary", ("torch", "mmdet", "mmengine", "numpy")) == []
