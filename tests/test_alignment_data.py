"""User datasets: local JSON/JSONL/Parquet/saved folders in TRL's standard and conversational formats, with
one clear error naming the missing columns and the expected format."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")

import datasets  # noqa: E402

from rlopt.alignment.data import load_user_dataset, to_standard_format  # noqa: E402
from rlopt.alignment.models import tiny_tokenizer  # noqa: E402

ROWS = [
    {"prompt": "3 1 |", "chosen": " 1 3 <eos>", "rejected": " 3 1 <eos>"},
    {"prompt": "2 9 |", "chosen": " 2 9 <eos>", "rejected": " 9 <eos>"},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet", "folder"])
def test_local_files_load(tmp_path, suffix):
    ds = datasets.Dataset.from_list(ROWS)
    if suffix == ".json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS))
    elif suffix == ".jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif suffix == ".parquet":
        path = tmp_path / "d.parquet"
        ds.to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        ds.save_to_disk(str(path))
    loaded = to_standard_format(load_user_dataset(str(path)), "preference", tiny_tokenizer())
    assert loaded.to_list() == ROWS


def test_missing_file_and_wrong_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_user_dataset(str(tmp_path / "nope.jsonl"))
    bad = datasets.Dataset.from_list([{"question": "1 |", "answer": " 1 <eos>"}])
    with pytest.raises(
        ValueError, match=r"prompt-completion dataset is missing column\(s\) \['prompt', 'completion'\]"
    ):
        to_standard_format(bad, "prompt-completion", tiny_tokenizer())
    with pytest.raises(ValueError, match="unknown dataset kind"):
        to_standard_format(bad, "pairs", tiny_tokenizer())


def test_conversational_preference_rendered_with_the_chat_template():
    tok = tiny_tokenizer()
    tok.chat_template = (  # a user turn ends with the assistant marker "|", as real templates open a reply
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }} | "
        "{% else %}{{ m['content'] }} {% endif %}{% endfor %}"
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": "3 1"}],
            "chosen": [{"role": "assistant", "content": "1 3 <eos>"}],
            "rejected": [{"role": "assistant", "content": "3 1 <eos>"}],
        }
    ]
    out = to_standard_format(datasets.Dataset.from_list(rows), "preference", tok)[0]
    assert out["prompt"] == "3 1 | "
    assert out["chosen"].strip() == "1 3 <eos>" and out["rejected"].strip() == "3 1 <eos>"
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        to_standard_format(datasets.Dataset.from_list(rows), "preference", tok)


def test_implicit_prompt_is_extracted():
    rows = [{"chosen": "3 1 | 1 3 <eos>", "rejected": "3 1 | 3 1 <eos>"}]
    out = to_standard_format(datasets.Dataset.from_list(rows), "preference", tiny_tokenizer())[0]
    assert out["prompt"] + out["chosen"] == rows[0]["chosen"] and out["prompt"].startswith("3 1 |")
