"""An exported control vector steers real llama.cpp: greedy tokens of llama.cpp vs ours, same model file.

The embedded model *is* a llama.cpp model (``SmolLM2-135M-Instruct.Q4_1.gguf``): we run it dequantized in
TransformerLens/Hugging Face, llama.cpp runs the Q4_1 weights with its own kernels. A CAA vector from the
efficacy benchmark (power-seeking, ``blocks.15.hook_resid_post``) is exported with
:func:`interp_steer.steering.gguf.to_gguf` at strength λ and loaded by llama.cpp's C API
(``llama_apply_adapter_cvec``, the call behind ``--control-vector``) as llama.cpp's loader reads the file.
For each prompt (chat template applied by us, the same token ids given to both) we compare greedy
continuations: unsteered ours vs llama.cpp (the numerical floor: Q4_1 kernels vs dequantized float32) and
steered ours vs llama.cpp, and whether steering changed the output in each engine.

Needs the ``llama-cpp-cffi`` wheel's CPU library (``pip download llama-cpp-cffi --no-deps``, unzip
``llama/_llama_cpp_cpu*.so`` into a folder) and ``cffi``; where the system libstdc++ predates GCC 14, a shim
defining ``__cxa_call_terminate`` is preloaded (``--preload``)::

    python benchmarks/bench_llamacpp.py --lib-dir /tmp/llcpu/llama --preload /tmp/llcpu/libshim.so
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, STEERING_PROMPTS, environment  # noqa: E402

PROMPTS = STEERING_PROMPTS


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> dict[str, float]:
    prefix = [common_prefix(a, b) / max(len(a), len(b), 1) for a, b in zip(ours, theirs, strict=True)]
    first16 = [a[:16] == b[:16] for a, b in zip(ours, theirs, strict=True)]
    return {"mean_common_prefix_share": sum(prefix) / len(prefix), "identical": sum(a == b for a, b in
            zip(ours, theirs, strict=True)) / len(ours), "first_16_identical": sum(first16) / len(first16)}


def run_llamacpp(args, model_path: str, cvec: str | None, prompts: list[list[int]]) -> list[list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        req, res = Path(tmp) / "req.json", Path(tmp) / "res.json"
        req.write_text(json.dumps({"lib_dir": args.lib_dir, "model": model_path, "cvec": cvec, "scale": 1.0,
                                   "prompts": prompts, "max_new_tokens": args.max_new_tokens}))
        env = {**os.environ, **({"LD_PRELOAD": args.preload} if args.preload else {})}
        proc = subprocess.run([args.python, str(Path(__file__).with_name("llamacpp_runner.py")), str(req), str(res)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"llama.cpp runner failed: {proc.stderr[-2000:]}")
        return json.loads(res.read_text())["tokens"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lib-dir", default=os.environ.get("LLAMA_CPP_CFFI_DIR"),
                   help="folder with llama-cpp-cffi's _llama_cpp_cpu*.so (env LLAMA_CPP_CFFI_DIR)")
    p.add_argument("--preload", default=os.environ.get("LLAMA_CPP_PRELOAD"), help="LD_PRELOAD for the runner")
    p.add_argument("--python", default=sys.executable, help="interpreter for the runner (needs cffi, gguf)")
    p.add_argument("--vector", default=str(RESULTS / "efficacy" / "vectors" / "power-seeking__caa.safetensors"))
    p.add_argument("--strengths", type=float, nargs="+", default=[2.0, 4.0])
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--output", default=str(RESULTS / "llamacpp.json"))
    args = p.parse_args(argv)
    if not args.lib_dir or not any(Path(args.lib_dir).glob("_llama_cpp_cpu*.so")):
        print("skipped: no llama.cpp library (pass --lib-dir with llama-cpp-cffi's _llama_cpp_cpu*.so)")
        return 0
    if not Path(args.vector).is_file():
        print(f"skipped: {args.vector} not found (run bench_efficacy.py first)")
        return 0
    import torch

    from interp_steer.chat import chat_tokens
    from interp_steer.generation import generate
    from interp_steer.models import embedded_gguf_path, load_model
    from interp_steer.steering.vector import SteeringVector

    torch.set_num_threads(1)
    model = load_model()
    vec = SteeringVector.load(args.vector, model=model)
    ids = [chat_tokens(model.tokenizer, q).prompt_ids for q in PROMPTS]
    gguf = str(embedded_gguf_path())

    def ours(strength: float | None) -> list[list[int]]:
        out = generate(model, PROMPTS, vec if strength else None, strength or 0.0, max_new_tokens=args.max_new_tokens,
                       return_tokens=True)
        return [g.tokens for g in out]  # type: ignore[union-attr]

    t0 = time.perf_counter()
    base_ours, base_cpp = ours(None), run_llamacpp(args, gguf, None, ids)
    rows = [{"strength": 0.0, **agreement(base_ours, base_cpp)}]
    examples = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam in args.strengths:
            path = vec.to_gguf(Path(tmp) / f"cvec_{lam:g}.gguf", strength=lam, model=model)
            st_ours, st_cpp = ours(lam), run_llamacpp(args, gguf, str(path), ids)
            rows.append({"strength": lam, **agreement(st_ours, st_cpp),
                         "llamacpp_changed_by_steering": sum(a != b for a, b in zip(st_cpp, base_cpp, strict=True)) / len(ids),
                         "ours_changed_by_steering": sum(a != b for a, b in zip(st_ours, base_ours, strict=True)) / len(ids)})
            examples.append({"strength": lam, "prompt": PROMPTS[0],
                             "ours": model.tokenizer.decode(st_ours[0]), "llamacpp": model.tokenizer.decode(st_cpp[0])})
    examples.insert(0, {"strength": 0.0, "prompt": PROMPTS[0], "ours": model.tokenizer.decode(base_ours[0]),
                        "llamacpp": model.tokenizer.decode(base_cpp[0])})
    result = {"vector": args.vector, "hooks": vec.hook_points, "max_new_tokens": args.max_new_tokens,
              "n_prompts": len(PROMPTS), "rows": rows, "examples": examples, "seconds": time.perf_counter() - t0,
              "environment": environment(), "llamacpp": "llama-cpp-cffi 0.4.42 CPU library (C API)"}
    Path(args.output).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print("| λ | identical | first 16 identical | common prefix | llama.cpp changed | ours changed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strength']:g} | {r['identical']:.2f} | {r['first_16_identical']:.2f} | "
              f"{r['mean_common_prefix_share']:.2f} | {r.get('llamacpp_changed_by_steering', '–')} | "
              f"{r.get('ours_changed_by_steering', '–')} |")
    for e in examples:
        print(json.dumps(e, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
