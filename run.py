"""Entry point: python run.py method=<m> task=<t> model=<model> seed=<s>   (-m for sweeps)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.checkpoint import ResumeError
from runner.data import DataError
from runner.models import HubUnavailableError
from runner.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        record, path = run(cfg, HydraConfig.get().runtime.output_dir)
    except (HubUnavailableError, DataError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{record['metric']}: best {record['best']['main']:.4f}, last {record['last']['main']:.4f} -> {path}")
    return record["best"]["main"]


if __name__ == "__main__":
    main()
