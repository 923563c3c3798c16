import json

import pytest

from prge.tasks import Example, PromptEncoder, TaskError, load_mr_examples, load_task
from tests.conftest import LABEL_WORDS


def test_mr_snippets_are_clean_and_split_is_fixed():
    examples = load_mr_examples()
    assert len(examples) == 12752  # fresh/rotten rows with duplicate texts dropped
    assert len({ex.text for ex in examples}) == len(examples)
    assert {ex.label for ex in examples} == {0, 1}
    a, b = load_task("mr", split_seed=0), load_task("mr", split_seed=0)
    assert [ex.text for ex in a.test[:20]] == [ex.text for ex in b.test[:20]]
    assert len(a.test) == 2550 and len(a.train) == 10202
    assert not {ex.text for ex in a.test} & {ex.text for ex in a.train}
    assert load_task("mr", split_seed=1).test[0] != a.test[0]


def test_local_csv_and_jsonl_tasks(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label,domain\n" + "".join(f"t{i},{i % 2},d{i % 3}\n" for i in range(10)))
    task = load_task(str(csv), template="Review: {text} Verdict:", label_words=[" no", " yes"],
                     test_fraction=0.3)
    assert (len(task.train), len(task.test)) == (7, 3)
    assert {ex.domain for ex in task.train + task.test} == {"d0", "d1", "d2"}
    jl = tmp_path / "d.jsonl"
    rows = [{"text": f"x{i}", "label": i % 2, "split": "test" if i < 2 else "train"}
            for i in range(6)]
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(str(jl), label_words=[" no", " yes"])
    assert [ex.text for ex in task.test] == ["x0", "x1"] and len(task.train) == 4


@pytest.mark.parametrize("content, message", [
    ("text,label\na,5\n", "label 5 is not in 0..1"),
    ("txt,label\na,1\n", "lacks column(s) text"),
    ("text,label\n", "has no rows"),
])
def test_bad_task_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task(str(path), label_words=[" no", " yes"])


def test_unknown_task_and_missing_label_words(tmp_path):
    with pytest.raises(TaskError, match="unknown task"):
        load_task("sst5")
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,1\n")
    with pytest.raises(TaskError, match="needs label-words"):
        load_task(str(path))


def test_encoder_truncates_text_never_template(tiny):
    enc = PromptEncoder(tiny[1], "{text} It was", LABEL_WORDS, max_length=32, bucket=16)
    batch = enc.encode([Example("word " * 100, 1), Example("ok", 0)])
    assert batch.input_ids.shape == (2, 32)
    suffix = enc.suffix_ids
    assert batch.input_ids[0, 32 - len(suffix):].tolist() == suffix
    assert batch.last_index.tolist() == [31, 1 + len(suffix) + 1 - 1]
    assert batch.labels.tolist() == [1, 0]


def test_label_words_must_start_with_different_tokens(tiny):
    with pytest.raises(TaskError, match="share their first token"):
        PromptEncoder(tiny[1], "{text}", (" great", " good"))
