"""The `probe` preset: a frozen image encoder (a small CLIP vision tower built from config with random weights,
or a CLIP/SigLIP checkpoint from a folder) plus linear heads, through the same train / predict / eval / suggest
commands as the VLM presets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from schema.fields import MULTI_FIELDS
from tests.test_cli import run
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.probe_heads import Layout, ordinal_choice

# two kinds of picture the heads must tell apart: colour -> colour term and diagnosis, blob size -> size band
KINDS = {
    "red": {"rgb": (200, 40, 40), "color": ["erythematous"], "diagnosis": "acne vulgaris", "size": "<5 mm", "radius": 6},
    "dark": {"rgb": (40, 30, 25), "color": ["black"], "diagnosis": "melanoma", "size": "1-2 cm", "radius": 26},
}


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def test_an_ordinal_field_takes_the_answer_with_the_best_expected_score_or_none():
    # P(size level) = 0.4, 0.3, 0.3, 0, 0: the most probable level is 0, but level 1 scores best on average
    # (exact 1, one level off 0.5): 0.3 + 0.5 * (0.4 + 0.3) = 0.65 against 0.4 + 0.5 * 0.3 = 0.55
    cumulative = np.array([[_logit(0.6), _logit(0.3), _logit(0.0), _logit(0.0)]] * 2)
    present = np.array([_logit(0.9), _logit(0.3)])
    # present 0.9: 0.9 * 0.65 beats "none" (0.1); present 0.3: "none" (0.7) beats 0.3 * 0.65
    assert ordinal_choice(present, cumulative).tolist() == [1, -1]
    # a non-monotone cumulative output is read as monotone (P(level >= 2) cannot exceed P(level >= 1))
    assert ordinal_choice(np.array([5.0]), np.array([[_logit(0.1), _logit(0.9), -20, -20]])).tolist() == [0]


def test_the_head_columns_do_not_depend_on_the_order_of_the_stored_terms():
    terms = {field: [f"{field}-a", f"{field}-b"] for field in MULTI_FIELDS}
    shuffled = dict(sorted(terms.items()))  # probe.json is written with sorted keys
    assert list(shuffled) != list(terms)
    assert Layout(shuffled, ["x", "y"]).slices() == Layout(terms, ["x", "y"]).slices()


# -- a crafted export: the picture decides the answer ----------------------------------------------------
def _picture(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    skin = np.clip(rng.normal((225, 190, 165), 12, (96, 96, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(skin, "RGB")
    spec = KINDS[kind]
    cx, cy = rng.integers(30, 66, 2)
    r = spec["radius"] + int(rng.integers(-2, 3))
    ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=spec["rgb"])
    return image


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    from curation.export.dataset import export_dataset
    from curation.ops.demo import build_demo
    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.settings import Settings

    home = tmp_path_factory.mktemp("probe")
    wb = open_workbench(Settings.load(environ={}, home=home / "wb"))
    build_demo(wb, None, n=40, seed=0, verified_fraction=1.0, annotated_fraction=0.0)
    export_dataset(wb, get_actor(wb, "admin"), home / "export", formats=("grpo",))
    wb.close()
    return home / "export"


@pytest.fixture(scope="module")
def crafted_export(demo_export, tmp_path_factory):
    """The demo export's metadata (taxonomy, instructions, weights) with 48 crafted pictures: 36 train, 12 test."""
    folder = tmp_path_factory.mktemp("crafted") / "export"
    shutil.copytree(demo_export / "grpo", folder / "grpo")
    (folder / "images").mkdir()
    template = json.loads((demo_export / "grpo" / "stage1.jsonl").read_text().splitlines()[0])
    stage1, stage2 = [], []
    for i in range(48):
        kind = ("red", "dark")[i % 2]
        spec, path = KINDS[kind], f"images/{i}.png"
        _picture(kind, i).save(folder / path)
        caption = {**template["caption"], "color": spec["color"], "size": spec["size"], "size_mm": None, "number": "single"}
        split = "train" if i < 36 else "test"
        stage1.append({**template, "id": i, "image": path, "caption": caption, "split": split})
        stage2.append({"id": i, "image": path, "diagnosis_key": spec["diagnosis"], "prompt": [], "split": split})
    for name, rows in (("stage1", stage1), ("stage2", stage2)):
        (folder / "grpo" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


QUICK = {"probe_l2": (1e-3,), "probe_folds": 2, "probe_steps": 100}  # where only the plumbing is under test


def _probe(export, runs, run_id, **overrides):
    from trainer.train import train

    return train(TrainConfig.for_preset("probe", export=str(export), output_dir=str(runs), run_id=run_id, **overrides))


def _predictions(run) -> dict[int, dict]:
    return {row["id"]: row for row in map(json.loads, (run / "held_out_predictions.jsonl").read_text().splitlines())}


def test_the_probe_learns_what_the_picture_shows_and_predicts_held_out_images(crafted_export, tmp_path):
    run = _probe(crafted_export, tmp_path / "runs", "p")
    doc = json.loads((run / "model" / "probe.json").read_text())
    assert doc["encoder"]["source"] is None and (run / "model" / "encoder" / "config.json").is_file()
    assert doc["cross_validation"]["folds"] == 3 and doc["train_images"] == 36
    predictions = _predictions(run)
    assert sorted(predictions) == list(range(36, 48))  # the test split: what the probe did not learn from
    for image_id, row in predictions.items():
        spec = KINDS[("red", "dark")[image_id % 2]]
        assert row["model_version"] == "p:probe" and row["caption_error"] is None
        assert row["caption"]["color"] == spec["color"], row["caption"]
        assert row["caption"]["number"] == "single" and row["caption"]["other"] == ""
        assert row["diagnoses"][0]["key"] == spec["diagnosis"] and len(row["diagnoses"]) == 6
        scores = [d["score"] for d in row["diagnoses"]]
        assert scores == sorted(scores, reverse=True) and 0.5 < scores[0] <= 1.0
        assert row["caption_text"].startswith("Color: ")
    sizes = [row["caption"]["size"] == KINDS[("red", "dark")[i % 2]]["size"] for i, row in predictions.items()]
    assert sum(sizes) >= 10, sizes
    progress = json.loads((run / "progress.json").read_text())
    assert progress["status"] == "done"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["images"] == 36 and metrics[0]["encoded"] == 36
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] / 2


def test_embeddings_are_cached_per_image_and_encoder(crafted_export, tmp_path):
    runs = tmp_path / "runs"
    _probe(crafted_export, runs, "first", **QUICK)
    second = _probe(crafted_export, runs, "second", **QUICK)
    first_row = json.loads((second / "metrics.jsonl").read_text().splitlines()[0])
    assert first_row["encoded"] == 0  # every training image came from the cache
    cached = sorted((runs / "embedding-cache").rglob("*.npy"))
    assert len(cached) == 48  # 36 training + 12 held-out images, one file each
    cached[0].write_bytes(b"damaged")
    third = _probe(crafted_export, runs, "third", **QUICK)
    assert json.loads((third / "metrics.jsonl").read_text().splitlines()[0])["encoded"] in (0, 1)
    assert np.load(cached[0]).shape == (128,)  # re-encoded and rewritten
    other = _probe(crafted_export, runs, "other-seed", seed=1, **QUICK)  # another encoder: its own features
    assert json.loads((other / "metrics.jsonl").read_text().splitlines()[0])["encoded"] == 36
    assert len(list((runs / "embedding-cache").iterdir())) == 2


def test_a_changed_encoder_is_refused_at_prediction(crafted_export, tmp_path):
    from safetensors.torch import load_file, save_file

    from trainer.predict import load_predictor

    run = _probe(crafted_export, tmp_path / "runs", "p", **QUICK)
    weights = run / "model" / "encoder" / "model.safetensors"
    state = load_file(weights)
    name = next(iter(state))
    state[name] = state[name] + 1
    save_file(state, weights)
    with pytest.raises(TrainerError, match="not the one this probe was trained on"):
        load_predictor(run)


def _save_clip(folder, kind: str):
    """A CLIPModel or SiglipModel checkpoint (text tower included, as MONET ships) with its image processor."""
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(0)
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text = {**vision, "vocab_size": 99}
    if kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config={**vision, "image_size": 32, "patch_size": 8}, text_config=text))
        processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipModel(SiglipConfig(vision_config={**vision, "image_size": 32, "patch_size": 8}, text_config=text))
        processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_a_clip_or_siglip_checkpoint_in_a_folder_is_the_encoder(crafted_export, tmp_path, kind):
    from trainer.predict import load_predictor

    encoder = _save_clip(tmp_path / kind, kind)
    run = _probe(crafted_export, tmp_path / "runs", kind, model=str(encoder), **QUICK)
    doc = json.loads((run / "model" / "probe.json").read_text())
    assert doc["encoder"]["source"] == str(encoder) and doc["encoder"]["dim"] == 32
    assert not (run / "model" / "encoder").exists()  # referenced, not copied
    assert len(_predictions(run)) == 12
    assert load_predictor(run).model_version == f"{kind}:probe"


def test_encoders_the_probe_cannot_use_are_refused_clearly(crafted_export, tmp_path, tiny_model):
    with pytest.raises(TrainerError, match="cannot load the image encoder"):
        _probe(crafted_export, tmp_path / "runs", "missing", model=str(tmp_path / "nowhere"))
    model, _ = tiny_model()
    model.save_pretrained(tmp_path / "qwen")
    with pytest.raises(TrainerError, match="takes a CLIP or SigLIP vision tower"):
        _probe(crafted_export, tmp_path / "runs", "qwen", model=str(tmp_path / "qwen"))
    with pytest.raises(TrainerError, match="no FDLinear layers or GRPO stages"):
        from trainer.ablate import AblationConfig

        AblationConfig(export=str(crafted_export), out=str(tmp_path / "ablation"), preset="probe")


def test_train_predict_eval_and_suggest_accept_a_probe_run_and_the_annotate_page_offers_it(tmp_path, monkeypatch):
    home, export, runs = tmp_path / "wb", tmp_path / "export", tmp_path / "runs"
    run(home, "demo", "--n", "40", "--verified-fraction", "0.7")
    run(home, "export", "--format", "grpo", "--out", str(export))
    trained = run(home, "train", "--preset", "probe", "--export", str(export), "--runs", str(runs), "--run-id", "p")
    assert "run p done" in trained.stdout and (runs / "p" / "model" / "probe.json").is_file()
    manifest, predictions = export / "grpo" / "stage1.jsonl", tmp_path / "predictions.jsonl"
    run(home, "predict", "--checkpoint", str(runs / "p"), "--images", str(manifest), "--out", str(predictions))
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == len(manifest.read_text().splitlines()) and all(r["model_version"] == "p:probe" for r in rows)
    evaluated = run(
        home,
        "eval",
        "--export",
        str(export),
        "--checkpoint",
        str(runs / "p"),
        "--split",
        "train",
        "--out",
        str(tmp_path / "eval"),
    )
    assert "train items: top1" in evaluated.stdout and (tmp_path / "eval" / "report.md").is_file()
    suggested = run(home, "--user", "admin", "suggest", "--checkpoint", str(runs / "p"))
    assert "suggestions added" in suggested.stdout and "run #1 in the run registry" in suggested.stdout
    # registered: its held-out predictions (val/test of the export) count as evidence at once, under run #1
    evidence = json.loads(run(home, "--user", "reviewer", "sources", "--json").stdout)
    probe = evidence["sources"]["model:skinflow:p:probe"]
    assert probe["measures"]["diagnosis_top1"]["n"] > 0 and "run #1" in probe["held_out"]
    assert set(evidence["runs"]) == {"1"}

    import streamlit as st
    from sqlalchemy import select

    from curation.store.auth import get_actor
    from curation.store.db import open_workbench
    from curation.store.models import Draft, Image
    from curation.store.settings import Settings
    from curation.store.workflow import update_workflow_settings
    from tests.test_app_pages import page

    monkeypatch.setenv("SKINFLOW_HOME", str(home))
    st.cache_resource.clear()
    wb = open_workbench(Settings.load())
    try:
        # no gold item: the page must open an image the probe suggested for (a gold one, 5% of the time, has none)
        update_workflow_settings(wb, get_actor(wb, "admin"), gold_rate=0.0)
        with wb.session() as s:
            needing = s.scalars(select(Image.id).where(Image.status.in_(("pending", "annotated")))).all()
            probe_drafts = s.scalars(select(Draft).where(Draft.kind == "model", Draft.version == "p:probe")).all()
        assert needing and {d.image_id for d in probe_drafts} == set(needing)
        at = page(wb, "annotate", "annotator")
        assert not at.exception
        image_id = at.session_state["annotate_item"]["image_id"]
        options = [str(o) for o in at.selectbox(key=f"src-{image_id}").options]
        assert any("p:probe" in o for o in options), options
    finally:
        wb.close()
        st.cache_resource.clear()


def test_a_cancel_stops_the_probe_without_leaving_a_model(crafted_export, tmp_path):
    from trainer.train import train

    stop = tmp_path / "stop"
    stop.write_text("cancelled by admin\n")
    config = TrainConfig.for_preset("probe", export=str(crafted_export), output_dir=str(tmp_path / "runs"), run_id="c")
    run = train(config, cancel_file=stop)
    assert json.loads((run / "progress.json").read_text())["status"] == "cancelled"
    assert not (run / "model").exists() and not (run / "held_out_predictions.jsonl").exists()
    stop.unlink()
    resumed = train(config, resume=True)  # the same command again finishes it (the cache keeps what was encoded)
    assert (
        json.loads((resumed / "progress.json").read_text())["status"] == "done" and (resumed / "model" / "probe.json").is_file()
    )
