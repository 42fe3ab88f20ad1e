"""GLUE loading: official row counts on the real files, verbatim quotes, and clear errors on bad input."""

import pytest

from runner.data import DataError, load_glue, read_glue_tsv
from tests.conftest import compose_config

OFFICIAL_ROWS = {  # (train, dev) of the official GLUE release
    "cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277),
}


@pytest.mark.parametrize("task", sorted(OFFICIAL_ROWS))
def test_row_counts_match_official(task, data_dir):
    splits, source = load_glue(compose_config(f"task={task}").task, data_dir)
    assert (len(splits["train"]), len(splits["dev"])) == OFFICIAL_ROWS[task]
    assert source.endswith(compose_config(f"task={task}").task.glue_dir)


def test_qnli_dev_rows(data_dir):
    task = compose_config("task=qnli").task
    dev = read_glue_tsv(data_dir / "glue" / "QNLI" / "dev.tsv", task)
    assert len(dev) == 5463 and set(dev.labels) == {0, 1}


def test_quotes_are_kept_verbatim_and_labels_mapped(data_dir):
    splits, _ = load_glue(compose_config("task=rte").task, data_dir)
    starting_with_quote = [s for s in splits["train"].text_a if s.startswith('"')]
    assert len(starting_with_quote) > 0  # the default CSV quoting would strip these
    assert splits["train"].text_b.count('"The Persians" was written by Aeschylus.') == 2
    assert set(splits["train"].labels) == {0, 1}
    stsb, _ = load_glue(compose_config("task=stsb").task, data_dir)
    assert min(stsb["dev"].labels) == 0.0 and max(stsb["dev"].labels) == 5.0


def test_mrpc_header_with_bom(data_dir):
    splits, _ = load_glue(compose_config("task=mrpc").task, data_dir)
    assert sum(splits["dev"].labels) == 279  # 68% positive of 408


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("content, message", [
    ("index\tsentence1\tlabel\n0\ta\tentailment\n", r"missing column\(s\) \['sentence2'\]"),
    ("index,sentence1,sentence2,label\n0,a,b,entailment\n", r"missing column.*delimiter"),
    (RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", r"label\(s\) \['maybe'\] outside the label set"),
    (RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n", r"label\(s\) \[''\] outside|missing"),
    (RTE_HEADER, "the split is empty"),
])
def test_bad_tsv_gets_a_clear_error(tmp_path, content, message):
    path = write(tmp_path / "glue" / "RTE" / "train.tsv", content)
    with pytest.raises(DataError, match=message):
        read_glue_tsv(path, compose_config("task=rte").task)


def test_missing_data_directory_names_it(tmp_path):
    with pytest.raises(DataError, match=r"no local copy at .*glue/RTE.*Hub cannot be reached"):
        load_glue(compose_config("task=rte").task, tmp_path / "nowhere")


def test_missing_split_file_names_it(tmp_path):
    write(tmp_path / "glue" / "RTE" / "train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"missing GLUE file .*RTE/dev.tsv"):
        load_glue(compose_config("task=rte").task, tmp_path)
