"""Compose and dry-run many recipe argument lists in ONE Python process (one ``import verl``).

``bash recipes/<x>.sh --print-args`` gives the Hydra arguments of a recipe; this script composes
each list exactly as ``python -m papo_verl.main`` does (the ``--config-name=`` it names, default
``papo_trainer``, + overrides; Hydra's own ``hydra.*`` settings dropped) and runs
:func:`papo_verl.main.run` with ``dry_run=True``: papo_verl's pre-Ray checks and verl's own
``validate_config``; what it prints must end with the resolved config as YAML. The recipe test checks once that a real
``bash recipes/papo_math.sh --dry-run`` subprocess prints exactly the same YAML.

    python tests/recipes/_compose_recipes.py cases.json results.json

cases.json: ``[{"name": str, "args": [str, ...], "check_files": bool, "dry_run": bool}, ...]``
(``dry_run`` false: compose and resolve only, e.g. a CPU demo run's arguments);
results.json: ``{name: {"yaml": str, "config": dict} | {"error": str}}``. ``check_files`` also runs
``papo_verl.integration.preflight.check_model_and_data`` (model folder or hub id, parquet columns) for real.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import yaml


def split_dry_run_output(stdout: str, resolved_yaml: str) -> str:
    """Check that a dry run's stdout ends with ``resolved_yaml``; return what verl printed before it."""
    text, tail = stdout.rstrip(), resolved_yaml.rstrip()
    if not tail or not text.endswith(tail):
        raise ValueError(f"the dry run did not end with the resolved config; its output ends with:\n{text[-2000:]}")
    return text[: len(text) - len(tail)]


def main(cases_path: str, out_path: str) -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from papo_verl.integration import preflight
    from papo_verl.main import run

    with open(cases_path, encoding="utf-8") as fh:
        cases = json.load(fh)
    results: dict[str, dict] = {}
    with initialize_config_module(config_module="papo_verl.config", version_base=None):
        for case in cases:
            names = [a.partition("=")[2] for a in case["args"] if a.startswith("--config-name=")]
            overrides = [a for a in case["args"] if not a.startswith(("hydra.", "hydra/", "--config-name="))]
            buf = io.StringIO()
            try:
                cfg = compose(config_name=names[-1] if names else "papo_trainer", overrides=overrides)
                resolved = OmegaConf.to_yaml(cfg, resolve=True)
                if case.get("dry_run", True):
                    with contextlib.redirect_stdout(buf):
                        run(cfg, dry_run=True)
                    resolved = OmegaConf.to_yaml(cfg, resolve=True)  # run() printed this config
                    split_dry_run_output(buf.getvalue(), resolved)
                if case.get("check_files"):
                    preflight.check_model_and_data(cfg)
                results[case["name"]] = {"yaml": resolved, "config": yaml.safe_load(resolved)}
            except Exception as err:  # reported to the test, which decides
                results[case["name"]] = {"error": f"{type(err).__name__}: {err}"}
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
