"""The built-in tiktoken tokenizer and a tokenizer folder read by AutoTokenizer give the same ids."""

import pytest
from tokenizer_folder import write_tokenizer_folder

from groot_sage_ros.families.common.tokenizer import (
    FolderTokenizer,
    QwenTiktokenTokenizer,
)
from groot_sage_ros.families.n1_5.processor import N15Processor, ProcessorConfig
from groot_sage_ros.families.n1_5.prompt import SPECIAL_TOKENS, load_tokenizer

INSTRUCTIONS = [
    "pick up the cube",
    "Put the RED block on top of the blue one, then return home!",
    "it's the robot's 2nd try: move 3.5 cm left\tand   wait\n\nthen go",
    "Déjà vu: 把杯子放在桌子上 ǅ e\u0301",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tokenizer_folder(tmp_path_factory.mktemp("tokenizer"))


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_same_prompt_ids_on_both_paths(folder, instruction):
    builtin = N15Processor(tokenizer=QwenTiktokenTokenizer(SPECIAL_TOKENS))
    from_folder = N15Processor(ProcessorConfig(tokenizer=str(folder)))
    assert isinstance(from_folder.tokenizer, FolderTokenizer)
    assert from_folder.encode(2, instruction) == builtin.encode(2, instruction)


def test_folder_with_wrong_special_ids_is_refused(folder, tmp_path):
    import json
    import shutil

    bad = shutil.copytree(folder, tmp_path / "bad")
    config = json.loads((bad / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        k: v for k, v in config["added_tokens_decoder"].items() if v["content"] != "<img>"
    }
    (bad / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="<img> has id"):
        load_tokenizer(str(bad))
