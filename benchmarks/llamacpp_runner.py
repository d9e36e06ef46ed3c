"""Greedy generation in real llama.cpp (the prebuilt CPU library of the ``llama-cpp-cffi`` wheel), optionally with
a control-vector GGUF file, for ``bench_llamacpp.py``. Run as a separate process (it may need ``LD_PRELOAD``).

The control vector is read the way llama.cpp's own loader (``common``'s control-vector loading) does:
tensors ``direction.<k>`` (k ≥ 1; ``direction.0`` refused), float32, one length; layer k's values at offset
``n_embd·(k−1)`` of the buffer passed to ``llama_apply_adapter_cvec(ctx, data, len, n_embd, 1, n_layer)``, which
adds them to the output of block k at every position.

    python llamacpp_runner.py REQUEST.json RESULT.json      # request: lib_dir, model, cvec, scale, prompts (ids)
"""

from __future__ import annotations

import importlib
import json
import re
import sys

import numpy as np


def read_control_vector(path: str, scale: float, n_embd: int) -> np.ndarray:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    layers: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if m is None:
            continue
        k = int(m.group(1))
        if k == 0:
            raise SystemExit(f"{path}: invalid (zero) direction layer, as llama.cpp reports")
        data = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if data.shape[0] != n_embd:
            raise SystemExit(f"{path}: {t.name} has {data.shape[0]} values, the model has n_embd={n_embd}")
        layers[k] = data * scale
    buf = np.zeros(n_embd * max(layers), dtype=np.float32)
    for k, data in layers.items():
        buf[n_embd * (k - 1) : n_embd * k] += data
    return buf


def main(request_path: str, result_path: str) -> None:
    req = json.loads(open(request_path).read())
    sys.path.insert(0, req["lib_dir"])
    mod = importlib.import_module("_llama_cpp_cpu")
    lib, ffi = mod.lib, mod.ffi

    @ffi.callback("void(enum ggml_log_level, char *, void *)")
    def quiet(level, text, data):  # noqa: ARG001
        return None

    lib.llama_log_set(quiet, ffi.NULL)
    lib.llama_backend_init()
    mp = lib.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = lib.llama_model_load_from_file(req["model"].encode(), mp)
    if model == ffi.NULL:
        raise SystemExit(f"llama.cpp could not load {req['model']}")
    vocab = lib.llama_model_get_vocab(model)
    n_embd, n_layer = lib.llama_model_n_embd(model), lib.llama_model_n_layer(model)
    cvec = read_control_vector(req["cvec"], float(req.get("scale", 1.0)), n_embd) if req.get("cvec") else None
    outputs = []
    for ids in req["prompts"]:
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_threads, cp.n_threads_batch = 1024, 1024, 1, 1
        ctx = lib.llama_init_from_model(model, cp)
        if cvec is not None:
            buf = ffi.new("float[]", cvec.tolist())
            if lib.llama_apply_adapter_cvec(ctx, buf, len(cvec), n_embd, 1, n_layer) != 0:
                raise SystemExit("llama_apply_adapter_cvec failed")
        sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_greedy())
        toks = ffi.new("int32_t[]", ids)
        if lib.llama_decode(ctx, lib.llama_batch_get_one(toks, len(ids))) != 0:
            raise SystemExit("llama_decode failed on the prompt")
        out: list[int] = []
        for _ in range(int(req["max_new_tokens"])):
            tok = lib.llama_sampler_sample(sampler, ctx, -1)
            if lib.llama_vocab_is_eog(vocab, tok):
                break
            out.append(int(tok))
            one = ffi.new("int32_t[]", [tok])
            if lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) != 0:
                raise SystemExit("llama_decode failed")
        outputs.append(out)
        lib.llama_sampler_free(sampler)
        lib.llama_free(ctx)
    lib.llama_model_free(model)
    with open(result_path, "w") as fh:
        json.dump({"tokens": outputs, "n_embd": n_embd, "n_layer": n_layer}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
