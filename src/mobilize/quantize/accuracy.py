"""Real accuracy on a labelled test set, for models mobilize has one for (the zoo's ``digits``: scikit-learn's
held-out digits with their real labels). Every exported file is run on the whole set with its format's runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mobilize.errors import one_line

#: source → (loader "module:function" returning normalised (x, y), description)
EVAL_SETS = {"zoo:digits": ("mobilize.models.digits:digits_test_set",
                            "scikit-learn digits test split (25 %, stratified, random_state=0)")}


def eval_set(source: str, spec: Any) -> dict[str, Any] | None:
    """``{"dataset", "x", "y", "pytorch"}`` for ``source``, or None when mobilize has no labelled set for it."""
    import importlib
    import importlib.util

    import torch

    entry = EVAL_SETS.get(source)
    if entry is None:
        return None
    if importlib.util.find_spec("sklearn") is None:  # the zoo's datasets come with scikit-learn ([all] installs it)
        return None
    mod, _, fn = entry[0].partition(":")
    x, y = getattr(importlib.import_module(mod), fn)()
    with torch.no_grad():
        pred = spec.module(torch.from_numpy(x)).argmax(1).numpy()
    top1 = float((pred == y).mean())
    return {"dataset": entry[1], "x": x, "y": y,
            "pytorch": {"dataset": entry[1], "samples": int(len(y)), "top1_accuracy": round(top1, 4)}}


def file_accuracy(fmt: str, path: Path, spec: Any, es: dict[str, Any]) -> dict[str, Any]:
    """Top-1 accuracy of the file on the labelled set (one sample per inference), or why it could not run here."""
    from mobilize._quiet import captured_output
    from mobilize.quantize.driver import runner_for
    from mobilize.verify.parity import adapt_feed, adapt_output, io_map

    base = {"dataset": es["dataset"], "samples": int(len(es["y"]))}
    runner_cls, _native = runner_for(fmt)
    if runner_cls is None:
        from mobilize import formats

        return {**base, "top1_accuracy": None, "runtime": None,
                "unverified": formats.get(fmt).load("runner").available()[1]}
    name = spec.input_names[0]
    out_name = spec.output_names[0]
    preds = []
    try:
        with captured_output(), runner_cls(path) as r:
            fin = io_map(spec.input_names, r.inputs)[name]
            fout = io_map(spec.output_names, r.outputs)[out_name]
            tin = {t.name: t for t in r.inputs}[fin]
            tout = {t.name: t for t in r.outputs}[fout]
            for i in range(len(es["y"])):
                out = r.infer({fin: adapt_feed(es["x"][i:i + 1], tin)})[fout]
                preds.append(int(np.argmax(adapt_output(out, tout))))
    except Exception as exc:  # noqa: BLE001 - accuracy is a report; a failure to run is recorded, not raised
        return {**base, "top1_accuracy": None, "runtime": runner_cls.runtime,
                "unverified": f"could not run: {type(exc).__name__}: {one_line(exc, 200)}"}
    acc = float(np.mean(np.asarray(preds) == es["y"]))
    return {**base, "top1_accuracy": round(acc, 4), "runtime": runner_cls.runtime,
            "pytorch_top1_accuracy": es["pytorch"]["top1_accuracy"]}
