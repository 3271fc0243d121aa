from pathlib import Path

import pytest

import secateurs as sc
from secateurs.recipe import RecipeError, load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def base(**changes):
    recipe = {
        "task": "digits",
        "model": {"name": "mlp", "args": {"hidden": [32]}},
        "stages": [{"train": {"epochs": 1}}, {"prune": {"ratio": 0.5}}, {"finetune": None}],
    }
    recipe.update(changes)
    return recipe


def problems(data, **kwargs) -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, **kwargs)
    return dict(info.value.problems)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_validates(path):
    recipe, stages = load_recipe(path)
    assert stages and recipe.task in ("digits", "mnist1d")
    assert [s.kind for s in stages] == [next(iter(d)) for d in recipe.stages]


def test_shipped_recipes_cover_every_method_family():
    names = {p.stem for p in RECIPES}
    assert {
        "demo",
        "mnist1d-structured",
        "mnist1d-unstructured",
        "mnist1d-quantization",
        "mnist1d-distillation",
        "mnist1d-automatic",
    } <= names


def test_stage_arguments_left_out_take_the_python_defaults():
    _, stages = parse_recipe(base())
    assert stages[1].args.kwargs() == {"ratio": 0.5}
    assert stages[2].args.fit_kwargs() == {}


def test_unknown_stage_names_the_stage_and_the_known_ones():
    p = problems(base(stages=[{"train": {}}, {"prunee": {"ratio": 0.5}}]))
    assert "unknown stage 'prunee'" in p["stages[1]"] and "sparsify" in p["stages[1]"]


def test_wrong_type_gives_the_yaml_path_and_what_was_expected():
    p = problems(base(stages=[{"train": {}}, {"prune": {"ratio": "half"}}]))
    assert set(p) == {"stages[1].prune.ratio"}
    assert "valid number" in p["stages[1].prune.ratio"] and "'half'" in p["stages[1].prune.ratio"]
    p = problems(base(stages=[{"train": {"epochs": 2.5, "optimizer": "adamax"}}]))
    assert "integer" in p["stages[0].train.epochs"]
    assert "'adam'" in p["stages[0].train.optimizer"]


def test_unknown_key_is_refused_with_its_path():
    p = problems(base(stages=[{"train": {"epoch": 3}}]))
    assert p == {"stages[0].train.epoch": "unknown key"}
    p = problems(base(seeds=3))
    assert p == {"seeds": "unknown key"}


def test_a_task_with_options_is_a_mapping():
    recipe, _ = parse_recipe(base(task={"name": "mnist1d", "val_size": 400}))
    assert (recipe.task, recipe.task_args) == ("mnist1d", {"val_size": 400})
    assert parse_recipe(base())[0].task_args == {}
    p = problems(base(task={"name": "mnist1d", "val_sise": 400}))
    assert "task mnist1d takes no option 'val_sise'; its options: val_size" in p[""]
    p = problems(base(task={"name": "digits", "length": 40}))
    assert p[""] == "task digits takes no option 'length'; its options: none"


def test_a_null_value_is_refused_with_its_path():
    """``epochs: null`` is not "the default": an option left unset is a key left out."""
    p = problems(base(stages=[{"train": {"epochs": None, "lr": None}}]))
    assert p == {
        "stages[0].train": "epochs: null is not a value; leave the key out for its default"
    }
    stages = parse_recipe(base(stages=[{"train": {"lr": 0.01}}]))[1]
    assert stages[0].args.kwargs() == {"lr": 0.01}  # unset keys stay unset


def test_missing_task_and_unknown_model_are_named():
    data = base()
    del data["task"]
    data["model"] = {"name": "resnet50"}
    p = problems(data)
    assert p["task"] == "required key is missing"
    assert "unknown model 'resnet50'" in p["model.name"] and "mobilenet_v2" in p["model.name"]
    assert "unknown task 'imagenet'" in problems(base(task="imagenet"))["task"]


def test_registry_names_are_checked_with_the_known_list():
    p = problems(base(stages=[{"prune": {"ratio": 0.3, "importance": "l3"}}]))
    assert "unknown importance 'l3'" in p["stages[0].prune.importance"]
    p = problems(base(stages=[{"train": {}}, {"distill": {"method": "kdd"}}]))
    assert "'kdd'" in p["stages[1].distill.method"] and "rkd" in p["stages[1].distill.method"]


def test_prune_needs_exactly_one_amount_and_ratios_below_one():
    p = problems(base(stages=[{"prune": {"ratio": 0.5, "target_macs": 0.5}}]))
    assert "exactly one of ratio, target_macs, threshold" in p["stages[0].prune"]
    p = problems(base(stages=[{"prune": {"ratio": {"0": 1.2}}}]))
    assert "[0, 1)" in p["stages[0].prune.ratio"]


def test_options_of_another_method_are_refused():
    p = problems(base(stages=[{"train": {}}, {"quantize": {"method": "ptq", "lsq": True}}]))
    assert p["stages[1].quantize"] == "lsq applies to method qat only"
    p = problems(base(stages=[{"train": {}}, {"quantize": {"epochs": 3}}]))
    assert "epochs applies to method qat or qgt only" in p["stages[1].quantize"]
    p = problems(base(stages=[{"regularize": {"regularizer": "l1", "a": 0.1}}]))
    assert "a applies to regularizer smooth_l12 only" in p["stages[0].regularize"]


def test_stage_order_is_checked_before_anything_runs():
    p = problems(base(stages=[{"train": {}}, {"quantize": {}}, {"finetune": {}}]))
    assert "cannot follow quantization" in p["stages[2].finetune"]
    p = problems(base(stages=[{"train": {}}, {"export": {"format": "c"}}]))
    assert "put a quantize or compress stage before" in p["stages[1].export.format"]
    p = problems(base(stages=[{"distill": {"teacher": "later"}}, {"train": {"name": "later"}}]))
    assert "names no earlier stage" in p["stages[0].distill.teacher"]


def test_stage_names_default_to_the_kind_and_distill_finds_its_teacher():
    _, stages = parse_recipe(
        base(
            stages=[
                {"train": {}},
                {"prune": {"ratio": 0.3}},
                {"distill": {}},
                {"finetune": {}},
                {"finetune": {}},
                {"quantize": {"method": "qat"}},
                {"export": {"format": "onnx"}},
            ]
        )
    )
    assert [s.name for s in stages] == [
        "train",
        "prune",
        "distill",
        "finetune",
        "finetune-2",
        "qat",
        "export-onnx",
    ]
    assert stages[2].teacher == "train"
    p = problems(base(stages=[{"train": {"name": "a"}}, {"finetune": {"name": "a"}}]))
    assert "used by stages[0]" in p["stages[1].finetune"]


def test_overrides_set_keys_by_yaml_path_and_fail_on_missing_ones():
    recipe, stages = parse_recipe(base(), overrides={"stages[0].train.epochs": 7, "seed": 3})
    assert stages[0].args.epochs == 7 and recipe.seed == 3
    p = problems(base(), overrides={"stages[9].train.epochs": 1})
    assert "stages[9]" in p[""]
    p = problems(base(), overrides={"stages[0].train.epochs": "many"})
    assert "stages[0].train.epochs" in p


def test_unreadable_recipe_files_fail_clearly(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: digits\nstages: [train: {epochs: 1}\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(RecipeError, match="cannot read it"):
        load_recipe(binary)
    listed = tmp_path / "list.yaml"
    listed.write_text("- train: {}\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(listed)


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("task: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_search_stage_checks_its_method_budget_and_options():
    stage = {"search": {"method": "abc", "budget": {"macs": 0.3}, "options": {"colonies": 3}}}
    p = problems(base(stages=[{"train": {}}, stage]))
    assert "options ['colonies'] are not arguments of abc" in p["stages[1].search"]
    p = problems(base(stages=[{"search": {"method": "greedy", "budget": {}}}]))
    assert "unknown search method 'greedy'" in p["stages[0].search.method"]
    assert "give at least one of" in p["stages[0].search.budget"]
    _, stages = parse_recipe(
        base(stages=[{"search": {"method": "admm", "budget": {"flash_bytes": 20000, "macs": 0.5}}}])
    )
    budget = stages[0].args.budget
    assert isinstance(budget.flash_bytes, int) and isinstance(budget.macs, float)
    assert stages[0].name == "admm"


def test_recipe_api_is_exported():
    assert sc.recipe.run is not None and "prune" in sc.recipe.STAGE_KINDS
    assert set(sc.recipe.STAGE_KINDS) == set(sc.recipe.STAGES.names())
