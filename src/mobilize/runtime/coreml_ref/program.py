"""Load a ``.mlpackage`` ML Program and execute its main function with the NumPy op registry.

A package holds ``Manifest.json`` (which names the model spec), the spec (a ``Model`` protobuf whose ``mlProgram``
holds functions of blocks of ops) and ``weights/weight.bin`` (see :mod:`.blob`). Every op's inputs are looked up by
name, float16 inputs are widened to float32, the registered implementation runs, and each output is cast to the
dtype the program declares for it — for an fp16 program that rounds every intermediate result to float16, which is
the precision the file computes in.

Control flow ops (``while_loop``, ``cond``) hold nested blocks: their implementations receive each block as a
callable that runs it in a scope of its own (the block's inputs shadow outer names; values of the enclosing blocks
stay visible). Constants anywhere in the program, nested blocks included, are evaluated once, at load.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from mobilize.runtime.coreml_ref.blob import BlobFile
from mobilize.runtime.coreml_ref.errors import ExecutionError, PackageError, UnsupportedOpsError
from mobilize.runtime.coreml_ref.registry import OPS, OpImpl

# MIL DataType enum name → numpy dtype (sub-byte types live in uint8/int8 holders, one element per value)
_NP: dict[str, Any] = {
    "BOOL": np.bool_, "FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64, "BFLOAT16": np.float32,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "INT4": np.int8, "UINT1": np.uint8,
    "UINT2": np.uint8, "UINT3": np.uint8, "UINT4": np.uint8, "UINT6": np.uint8,
}
_BITS = {"INT4": 4, "UINT1": 1, "UINT2": 2, "UINT3": 3, "UINT4": 4, "UINT6": 6}
_BLOB_NAME = {"FLOAT16": "fp16", "FLOAT32": "fp32", "UINT8": "uint8", "INT8": "int8", "BFLOAT16": "bf16",
              "INT16": "int16", "UINT16": "uint16", "INT4": "int4", "UINT1": "uint1", "UINT2": "uint2",
              "UINT4": "uint4", "UINT3": "uint3", "UINT6": "uint6", "INT32": "int32", "UINT32": "uint32"}
CONSTANT_OPS = ("const",)  # plus every constexpr_* op: evaluated once, at load


def _dtype_name(tensor_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(tensor_type.dataType)


def _static_shape(tensor_type: Any) -> list[int | None]:
    return [d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tensor_type.dimensions]


class Program:
    """One ML Program: its spec, its weights and the main function's ops, ready to :meth:`run`."""

    def __init__(self, path: Path | str) -> None:
        from coremltools.proto import Model_pb2

        # make sure every op implementation is registered
        from mobilize.runtime.coreml_ref import ops  # noqa: F401

        self.path = Path(path)
        spec_path = self._spec_path()
        self.spec = Model_pb2.Model()
        try:
            self.spec.ParseFromString(spec_path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise PackageError(f"{spec_path}: unreadable Core ML model spec ({type(exc).__name__}: {exc})") from None
        kind = self.spec.WhichOneof("Type")
        if kind != "mlProgram":
            raise PackageError(f"{self.path.name}: the model is a {kind or 'empty'} model, not an ML Program; the "
                               "reference interpreter runs ML Programs only")
        self.weights_dir = spec_path.parent
        fn_name = self.spec.description.defaultFunctionName or "main"
        functions = self.spec.mlProgram.functions
        if fn_name not in functions:
            raise PackageError(f"{self.path.name}: the ML Program has no function {fn_name!r} "
                               f"(it has {sorted(functions)})")
        self.function = functions[fn_name]
        if self.function.opset not in self.function.block_specializations:
            raise PackageError(f"{self.path.name}: function {fn_name!r} has no block for its opset "
                               f"{self.function.opset!r}")
        self.opset = self.function.opset
        self.block = self.function.block_specializations[self.opset]
        self.input_names = [i.name for i in self.function.inputs]
        self.output_names = list(self.block.outputs)
        self._blobs: dict[str, BlobFile] = {}
        self._constants: dict[str, Any] | None = None

    def _spec_path(self) -> Path:
        from mobilize.bundle.mlpackage import check_package, manifest_doc
        from mobilize.errors import MobilizeInputError

        manifest = self.path / "Manifest.json"
        if not manifest.is_file():
            raise PackageError(f"{self.path}: not a .mlpackage (no Manifest.json)")
        try:
            check_package(self.path)  # paths inside, no links or special files, bounded sizes
            m = manifest_doc(self.path)
            entry = m["itemInfoEntries"][m["rootModelIdentifier"]]
            rel = entry["path"]
        except MobilizeInputError as exc:
            raise PackageError(str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PackageError(f"{manifest}: malformed package manifest ({type(exc).__name__}: {exc})") from None
        spec_path = (self.path / "Data" / rel).resolve()
        if self.path.resolve() not in spec_path.parents:
            raise PackageError(f"{manifest}: the model path {rel!r} points outside the package")
        if not spec_path.is_file():
            raise PackageError(f"{self.path.name}: the model spec {rel!r} named by Manifest.json is missing")
        return spec_path

    # --- what the program needs ---------------------------------------------------------------------------------

    def operations(self) -> Iterator[Any]:
        """Every op of the main function, those inside control-flow blocks included, in program order."""
        return _walk(self.block)

    def op_types(self) -> list[str]:
        return sorted({op.type for op in self.operations()})

    def missing_ops(self) -> list[str]:
        """Every op type (or op parameter) this program uses that the interpreter does not implement."""
        missing: set[str] = set()
        for op in self.operations():
            impl = OPS.get(op.type)
            if impl is None:
                missing.add(op.type)
                continue
            if len(op.blocks) != len(impl.blocks):
                missing.add(f"{op.type} ({len(op.blocks)} nested blocks)")
            params = (set(op.inputs) | set(op.attributes)) - {"name"}
            for p in sorted(params - impl.params):
                missing.add(f"{op.type}(parameter {p!r})")
        return sorted(missing)

    def check_supported(self) -> None:
        missing = self.missing_ops()
        if missing:
            raise UnsupportedOpsError(f"{self.path.name}: the Core ML reference interpreter lacks "
                                      f"{len(missing)} op(s) this program uses: {', '.join(missing)}", missing)

    # --- values -------------------------------------------------------------------------------------------------

    def _blob(self, file_name: str) -> BlobFile:
        rel = file_name.replace("@model_path/", "", 1)
        path = (self.weights_dir / rel).resolve()
        if self.path.resolve() not in path.parents:
            raise PackageError(f"{self.path.name}: weight file {file_name!r} points outside the package")
        if str(path) not in self._blobs:
            self._blobs[str(path)] = BlobFile(path, display=f"{self.path.name}/{path.relative_to(self.path.resolve())}")
        return self._blobs[str(path)]

    def decode(self, value: Any) -> Any:
        """A MIL ``Value`` (immediate or blob file) → numpy array, or ``str`` for string scalars."""
        kind = value.type.WhichOneof("type")
        if kind == "listType" and value.WhichOneof("value") == "immediateValue" and \
                value.immediateValue.WhichOneof("value") == "list":
            return [self.decode(v) for v in value.immediateValue.list.values]
        if kind != "tensorType":
            raise PackageError(f"{self.path.name}: {kind} values are not supported by the reference interpreter")
        tt = value.type.tensorType
        dname = _dtype_name(tt)
        shape = _static_shape(tt)
        if any(s is None for s in shape):
            raise PackageError(f"{self.path.name}: a constant has a symbolic shape")
        count = int(np.prod(shape)) if shape else 1
        which = value.WhichOneof("value")
        if which == "blobFileValue":
            bf = value.blobFileValue
            if dname not in _BLOB_NAME:
                raise PackageError(f"{self.path.name}: blob values of type {dname} are not supported")
            arr = self._blob(bf.fileName).read(int(bf.offset), _BLOB_NAME[dname], count)
            return arr.astype(_NP[dname], copy=False).reshape(shape)
        if which != "immediateValue":
            raise PackageError(f"{self.path.name}: a value has neither an immediate value nor a blob")
        imm = value.immediateValue
        if imm.WhichOneof("value") != "tensor":
            raise PackageError(f"{self.path.name}: immediate {imm.WhichOneof('value')} values are not supported")
        t = imm.tensor
        field = t.WhichOneof("value")
        if dname == "STRING":
            vals = list(t.strings.values)
            return vals[0] if not shape and len(vals) == 1 else np.array(vals).reshape(shape)
        if field == "bytes":
            raw = t.bytes.values
            if dname in _BITS:
                from mobilize.runtime.coreml_ref.blob import unpack_bits

                arr = unpack_bits(np.frombuffer(raw, np.uint8), _BITS[dname], count, signed=dname == "INT4")
            elif dname == "BFLOAT16":
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, _NP[dname])
            return arr.astype(_NP[dname]).reshape(shape)
        if field is None:
            return np.zeros(shape, dtype=_NP.get(dname, np.float32))
        vals = getattr(t, field).values
        return np.asarray(list(vals)).astype(_NP[dname]).reshape(shape)

    # --- execution ----------------------------------------------------------------------------------------------

    def _is_constant(self, op: Any) -> bool:
        return op.type in CONSTANT_OPS or op.type.startswith("constexpr_")

    def constants(self) -> dict[str, Any]:
        """Outputs of const and constexpr_* ops (decompressed weights), computed once."""
        if self._constants is None:
            self.check_supported()
            env: dict[str, Any] = {}
            for op in self.operations():  # MIL names are unique program-wide, nested blocks included
                if self._is_constant(op):
                    self._execute(op, env)
            self._constants = env
        return self._constants

    def run(self, feeds: Mapping[str, np.ndarray], *,
            observe: Callable[[str, str, np.ndarray], None] | None = None,
            substitute: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run the main function on ``feeds`` (keyed by the function's input names); returns its outputs.

        ``observe(op_type, tensor_name, value)`` is called for every non-constant op output (activation statistics,
        ``mobilize diff``). ``substitute`` replaces op outputs by name once they are observed: the ops that read them
        get these values instead (cast to the declared dtype) — ``mobilize diff`` feeds each layer PyTorch's input.
        """
        env = dict(self.constants())
        for inp in self.function.inputs:
            if inp.name not in feeds:
                raise ExecutionError(f"{self.path.name}: missing input {inp.name!r}")
            tt = inp.type.tensorType
            env[inp.name] = np.asarray(feeds[inp.name]).astype(_NP.get(_dtype_name(tt), np.float32), copy=False)
        with np.errstate(all="ignore"):
            self._run_ops(self.block, env, observe, substitute)
        return {n: env[n] for n in self.output_names}

    def _run_ops(self, block: Any, env: MutableMapping[str, Any],
                 observe: Callable[[str, str, np.ndarray], None] | None,
                 substitute: Mapping[str, np.ndarray] | None = None) -> None:
        for op in block.operations:
            if self._is_constant(op):
                continue
            outs = self._execute(op, env, observe)
            if observe is not None:
                for name, val in outs:
                    observe(op.type, name, val)
            for name, val in outs if substitute else ():
                if name in substitute:
                    arr = np.asarray(val)
                    env[name] = np.asarray(substitute[name]).astype(arr.dtype, copy=False).reshape(arr.shape)

    def _block_fn(self, block: Any, env: MutableMapping[str, Any],
                  observe: Callable[[str, str, np.ndarray], None] | None) -> Callable[[Any], list[Any]]:
        """A nested block as a callable: its input values → its output values (fresh scope on every call)."""
        def run_block(values: Any) -> list[Any]:
            values = list(values)
            if len(values) != len(block.inputs):
                raise ExecutionError(f"{self.path.name}: a nested block takes {len(block.inputs)} inputs, "
                                     f"got {len(values)}")
            scope: ChainMap[str, Any] = ChainMap({i.name: v for i, v in zip(block.inputs, values)}, env)
            self._run_ops(block, scope, observe)
            return [scope[n] for n in block.outputs]

        return run_block

    def _arg(self, binding: Any, env: Mapping[str, Any]) -> Any:
        if binding.WhichOneof("binding") == "name":
            return env[binding.name]
        return self.decode(binding.value)

    def _execute(self, op: Any, env: MutableMapping[str, Any],
                 observe: Callable[[str, str, np.ndarray], None] | None = None) -> list[tuple[str, Any]]:
        impl: OpImpl = OPS[op.type]
        out_name = op.outputs[0].name if len(op.outputs) else "?"
        try:
            kwargs: dict[str, Any] = {k: self.decode(v) for k, v in op.attributes.items() if k != "name"}
            for key, arg in op.inputs.items():
                vals = [_widen(self._arg(b, env)) for b in arg.arguments]
                kwargs[key] = vals if key in impl.variadic else (vals[0] if len(vals) == 1 else vals)
            for key, block in zip(impl.blocks, op.blocks):
                kwargs[key] = self._block_fn(block, env, observe)
            result = impl.fn(**kwargs)
        except (PackageError, UnsupportedOpsError, ExecutionError):
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line naming the op
            raise ExecutionError(f"{self.path.name}: op {op.type} → {out_name!r} failed: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise ExecutionError(f"{self.path.name}: op {op.type} → {out_name!r} produced {len(results)} outputs, "
                                 f"the program declares {len(op.outputs)}")
        done = []
        for decl, val in zip(op.outputs, results):
            val = self._as_declared(op.type, decl, val)
            env[decl.name] = val
            done.append((decl.name, val))
        return done

    def _as_declared(self, op_type: str, decl: Any, val: Any) -> Any:
        """Cast to the declared dtype (fp16 rounding happens here) and check the declared static shape."""
        if decl.type.WhichOneof("type") != "tensorType" or isinstance(val, str):
            return val
        tt = decl.type.tensorType
        dname = _dtype_name(tt)
        if dname == "STRING":
            return val
        arr = np.asarray(val)
        if dname in _NP:
            arr = arr.astype(_NP[dname], copy=False)
        want = _static_shape(tt)
        if len(want) == arr.ndim and all(w is None or w == g for w, g in zip(want, arr.shape)):
            return arr
        if len(want) != arr.ndim and None not in want and int(np.prod(want)) == arr.size:
            return arr.reshape(want)  # rank-0 vs (1,) and the like: same values, the declared rank wins
        raise ExecutionError(f"{self.path.name}: op {op_type} → {decl.name!r} produced shape {list(arr.shape)}, "
                             f"the program declares {want}")


def _widen(v: Any) -> Any:
    """fp16 → fp32 for computation (the output is rounded back to the declared dtype)."""
    if isinstance(v, np.ndarray) and v.dtype == np.float16:
        return v.astype(np.float32)
    if isinstance(v, np.float16):
        return np.float32(v)
    return v


def _walk(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from _walk(nested)
