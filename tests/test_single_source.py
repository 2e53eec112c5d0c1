"""Lists that two layers must each keep (curation does not import the trainer; typer needs its help at import
time): each copy is checked against its source of truth here, so a new preset, variant, format, status or
command cannot be added in one place only."""

import dataclasses

import typer.main

from app.cli import app
from curation.export.formats import EXTRA_FORMATS, WRITERS
from curation.ops import runs
from curation.store.models import IMAGE_STATUSES, NEEDS_WORK_STATUSES, RUN_STATUSES, UNFINISHED_RUN_STATUSES
from tests.test_cli import HELP_COMMANDS
from trainer.config import ABLATION_VARIANTS, PRESET_NOTES, PRESETS, TrainConfig


def test_presets_and_ablation_variants_agree_between_curation_and_the_trainer():
    assert runs.PRESETS == tuple(PRESETS) == tuple(PRESET_NOTES)
    assert runs.ABLATION_VARIANTS == tuple(ABLATION_VARIANTS)
    assert runs.ABLATION_VARIANTS[0] == "full"  # the reference every paired difference is taken against
    config_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(runs.OVERRIDES) <= config_fields  # every setting the Train page passes on is one `skinflow train` knows


def test_every_override_the_app_passes_is_a_train_flag():
    train = next(c for c in typer.main.get_command(app).commands.values() if c.name == "train")
    flags = {opt for param in train.params for opt in param.opts}
    assert {f"--{key.replace('_', '-')}" for key in runs.OVERRIDES} <= flags


def test_export_formats_have_one_writer_each():
    assert tuple(WRITERS) == EXTRA_FORMATS


def test_status_subsets_are_statuses():
    assert set(NEEDS_WORK_STATUSES) <= set(IMAGE_STATUSES) and "verified" not in NEEDS_WORK_STATUSES
    assert set(UNFINISHED_RUN_STATUSES) == {"queued", "running"} and set(UNFINISHED_RUN_STATUSES) <= set(RUN_STATUSES)


def _command_paths(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _command_paths(command, (*prefix, name))


def test_the_cli_help_test_covers_every_command():
    assert {tuple(c) for c in HELP_COMMANDS} == {(), *_command_paths(typer.main.get_command(app))}
