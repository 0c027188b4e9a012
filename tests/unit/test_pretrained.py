"""save_pretrained / from_pretrained: local folders, offline; the whole model and the encoder alone."""

from __future__ import annotations

import json

import pytest
import torch

from fusmae_fast import FusMAE, build_model, export_encoder, load_encoder
from fusmae_fast.checkpoint import ENCODER_MODULES
from fusmae_fast.evaluate.encoder import checkpoint_file, load_model
from fusmae_fast.pretrained import CONFIG_NAME, WEIGHTS_NAME, is_pretrained_folder, read_pretrained


def _model(**kw) -> FusMAE:
    torch.manual_seed(0)
    return build_model("tiny", img_size=32, **kw).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 2, 32, 32, generator=g), torch.randn(2, 12, 32, 32, generator=g)


def test_whole_model_round_trip(tmp_path):
    model = _model(variant="xad", xattn_weights="per_direction")
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert is_pretrained_folder(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["fusmae_fast"]["weights"] == "model"
    assert config["embed_dim"] == 64 and config["img_size"] == 32 and config["variant"] == "xad"

    loaded = FusMAE.from_pretrained(folder)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    s1, s2 = _inputs()
    with torch.no_grad():
        out_a = model(s1, s2, seeds=torch.tensor([3, 4]))
        out_b = loaded(s1, s2, seeds=torch.tensor([3, 4]))
    assert torch.equal(out_a.loss, out_b.loss)
    assert torch.equal(out_a.pred_s2, out_b.pred_s2)


def test_encoder_only_round_trip(tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "enc", encoder_only=True)
    found = read_pretrained(folder)
    assert found.weights == "encoder"
    assert {k.split(".")[0] for k in found.state_dict} <= set(ENCODER_MODULES)
    assert not any(k.startswith("decoder_") for k in found.state_dict)

    loaded = FusMAE.from_pretrained(folder)
    s1, s2 = _inputs()
    with torch.no_grad():
        for a, b in ((s1, s2), (s1, None), (None, s2)):
            fa, fb = model.encode(a, b), loaded.encode(a, b)
            assert torch.equal(fa.cls, fb.cls)
            assert torch.equal(fa.tokens, fb.tokens)


def test_overrides_and_load_encoder_accept_a_folder(tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "m")
    assert FusMAE.from_pretrained(folder, kernels="triton").config.kernels == "triton"
    via_load_encoder = load_encoder(folder)
    via_eval = load_model(folder)
    assert checkpoint_file(folder) == folder
    s1, s2 = _inputs()
    with torch.no_grad():
        ref = model.encode(s1, s2).cls
        assert torch.equal(via_load_encoder.encode(s1, s2).cls, ref)
        assert torch.equal(via_eval.encode(s1, s2).cls, ref)


def test_same_features_as_export_encoder(tmp_path):
    model = _model()
    export_encoder(model, tmp_path / "encoder.safetensors")
    model.save_pretrained(tmp_path / "enc", encoder_only=True)
    s1, s2 = _inputs()
    with torch.no_grad():
        a = load_encoder(tmp_path / "encoder.safetensors").encode(s1, s2).cls
        b = load_model(tmp_path / "enc").encode(s1, s2).cls
    assert torch.equal(a, b)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pretrained folder"):
        FusMAE.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CONFIG_NAME).write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors missing"):
        FusMAE.from_pretrained(tmp_path / "half")
    folder = _model().save_pretrained(tmp_path / "m")
    (folder / CONFIG_NAME).write_text(json.dumps({"embed_dim": 64}))
    with pytest.raises(ValueError, match="not written by FusMAE.save_pretrained"):
        FusMAE.from_pretrained(folder)
    folder = _model().save_pretrained(tmp_path / "m2")
    (folder / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="unreadable weights"):
        FusMAE.from_pretrained(folder)
    folder = _model().save_pretrained(tmp_path / "m3")
    with pytest.raises(ValueError, match="weights do not match the config"):
        FusMAE.from_pretrained(folder, embed_dim=128, num_heads=2)


def test_repo_id_without_huggingface_hub(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(FileNotFoundError, match="needs huggingface_hub"):
        FusMAE.from_pretrained("someone/fusmae-tiny")


def test_eval_accepts_a_pretrained_folder(tmp_path):
    """``fusmae-fast eval --ckpt DIR`` with a save_pretrained folder: the linear probe runs on its encoder."""
    from fusmae_fast.evaluate import EvalConfig, run_evaluation

    torch.manual_seed(0)
    folder = build_model("tiny").save_pretrained(tmp_path / "tiny-pretrained", encoder_only=True)
    cfg = EvalConfig(
        task="linear",
        ckpt=str(folder),
        inputs=("s1+s2",),
        epochs=1,
        output_dir=str(tmp_path / "eval"),
        num_workers=0,
        progress=False,
    )
    result = run_evaluation(cfg)
    assert list(result["results"]) == ["tiny-pretrained"]
    assert 0.0 <= result["results"]["tiny-pretrained"]["s1+s2"]["map_macro"] <= 1.0
