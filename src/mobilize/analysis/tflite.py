"""TFLite reader: operators of every subgraph and every non-empty constant buffer (each buffer counted once, even
when several tensors share it). Parsed with LiteRT's flatbuffer schema; nothing is loaded into an interpreter."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from mobilize.analysis import Constant, FileContents


def read(path: Path) -> FileContents:
    from mobilize.errors import RuntimeFailure
    from mobilize.runtime import tflite_flatbuffer as fb

    data = Path(path).read_bytes()
    S = fb.schema()
    try:
        if not S.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError("no TFL3 identifier")
        model = S.Model.GetRootAs(data, 0)
        names = fb.builtin_names()
        dtypes = fb.numpy_dtypes()
        type_names = {v: k.lower() for k, v in vars(S.TensorType).items() if not k.startswith("_")}
        ops: list[str] = []
        first_user: dict[int, tuple[str, tuple[int, ...], int]] = {}  # buffer → (tensor name, shape, type)
        consumers: dict[int, list[str]] = defaultdict(list)
        for s in range(model.SubgraphsLength()):
            g = model.Subgraphs(s)
            for i in range(g.OperatorsLength()):
                op = g.Operators(i)
                name = fb.op_name(model, op, names)
                ops.append(name)
                for t in (int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ():
                    if t >= 0:
                        consumers[g.Tensors(t).Buffer()].append(name)
            for t in range(g.TensorsLength()):
                tensor = g.Tensors(t)
                b = tensor.Buffer()
                if b > 0 and b not in first_user:
                    shape = tuple(int(x) for x in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
                    first_user[b] = (tensor.Name().decode(errors="replace"), shape, tensor.Type())
        consts = []
        for b, (tname, shape, ttype) in sorted(first_user.items()):
            where = fb.span(model, b)
            if where is None:
                continue
            dtype = dtypes.get(ttype)
            value = fb.array(data, where, dtype, shape) if dtype is not None else None
            consts.append(Constant(tname, shape, np.dtype(dtype).name if dtype else type_names.get(ttype, "?"),
                                   where[1] - where[0], tuple(consumers.get(b, [])), value))
    except RuntimeFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed flatbuffer raises anything from struct to IndexError
        raise RuntimeFailure(f"{Path(path).name}: not a readable TFLite file ({type(exc).__name__})") from None
    return FileContents(ops, consts)
