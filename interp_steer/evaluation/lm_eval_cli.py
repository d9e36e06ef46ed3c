"""The plain lm-eval command line with the ``interp_steer`` model registered.

    python -m interp_steer.evaluation.lm_eval_cli run --model interp_steer \\
        --model_args vector=vec.safetensors,strength=4 --tasks mmlu --num_fewshot 5

Every argument is lm-eval's own; importing :mod:`interp_steer.evaluation.lm_eval_model` registers the model
name (lm-eval has no plugin discovery for model classes).
"""

from __future__ import annotations

import interp_steer.evaluation.lm_eval_model  # noqa: F401  (registers "interp_steer")


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
