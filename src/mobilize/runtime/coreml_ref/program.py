"""Load a ``.mlpackage`` ML Program and execute its main function with the NumPy op registry.

A package holds ``Manifest.json`` (which names the model spec), the spec (a ``Model`` protobuf whose ``mlProgram``
holds functions of blocks of ops) and ``weights/weight.bin`` (see :mod:`.blob`). Every op's inputs are looked up by
name, float16 inputs are widened to float32, the registered implementation runs, and each output is cast to the
dtype the program declares for it — for an fp16 program that rounds every intermediate result to float16, which is
the precision the file computes in.

Control flow ops (``while_loop``, ``cond``) hold nested blocks: their implementations receive each block as a
callable that runs it in a scope of its own (the block's inputs shadow outer names; values of the enclosing blocks
stay visible). Constants anywhere in the program, nested blocks included, are evaluated once, at load.

Execution is compiled once per program (:class:`_Step`): every op's implementation, its attributes and constant
inputs (decoded, fp16 widened), the names it reads and the dtype and static shape of each output are resolved before
the first run, so a run only looks up tensors and calls NumPy. The decoded constants and that plan are shared by
every :class:`Program` of a package with the same files (a bounded cache keyed by each file's SHA-256; see
:func:`clear_cache`); the constant arrays are read-only.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import ChainMap, OrderedDict
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

#: the decoded constants and compiled plans of recently loaded packages, kept for the next Program of the same files
CACHE_ENTRIES = 8
CACHE_BYTES = 1 << 29  # constants (as stored and as widened to float32) over all entries; a bigger program is not kept


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
        self._plan: _Plan | None = None
        self._key: tuple[Any, ...] | None = None  # the package's content, hashed when the constants are needed

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
        """Outputs of const and constexpr_* ops (decompressed weights, read-only arrays), computed once per package
        content (shared with every Program whose files are the same)."""
        if self._constants is None:
            self.check_supported()
            self._key = _package_key(self.path)
            cached = _cache_get(self._key)
            if cached is not None:
                self._constants, self._plan = cached.constants, cached.plan
                return self._constants
            env: dict[str, Any] = {}
            for op in self.operations():  # MIL names are unique program-wide, nested blocks included
                if self._is_constant(op):
                    self._call(self._compile_op(op, {}), env, None)
            for v in env.values():
                if isinstance(v, np.ndarray):
                    v.flags.writeable = False  # shared by every run (and Program) of these files
            self._constants = env
            _cache_put(self._key, _Cached(env, None, _nbytes(env)))
        return self._constants

    def plan(self) -> _Plan:
        """The compiled main block (see :class:`_Step`), built once per package."""
        if self._plan is None:
            constants = self.constants()
            if self._plan is None:  # not from the cache
                widened = {k: _widen(v) for k, v in constants.items()}
                for v in widened.values():
                    if isinstance(v, np.ndarray):
                        v.flags.writeable = False
                self._plan = _Plan(self._compile_block(self.block, widened), constants)
                _cache_put(self._key, _Cached(constants, self._plan, _nbytes(constants) + _nbytes(
                    {k: w for k, w in widened.items() if w is not constants[k]})))
        return self._plan

    def _compile_block(self, block: Any, widened: Mapping[str, Any]) -> _Block:
        steps = []
        for op in block.operations:
            if self._is_constant(op):
                continue
            steps.append(self._compile_op(op, widened))
        return _Block(tuple(i.name for i in block.inputs), tuple(steps), tuple(block.outputs))

    def _compile_op(self, op: Any, widened: Mapping[str, Any]) -> _Step:
        impl: OpImpl = OPS[op.type]
        out_name = op.outputs[0].name if len(op.outputs) else "?"
        static: dict[str, Any] = {}
        dynamic: list[tuple[str, bool, tuple[tuple[str | None, Any], ...]]] = []
        try:
            static.update({k: self.decode(v) for k, v in op.attributes.items() if k != "name"})
            for key, arg in op.inputs.items():
                binds: list[tuple[str | None, Any]] = []
                for b in arg.arguments:
                    if b.WhichOneof("binding") != "name":
                        binds.append((None, _widen(self.decode(b.value))))
                    elif b.name in widened:  # a constant: the same value on every run
                        binds.append((None, widened[b.name]))
                    else:
                        binds.append((b.name, None))
                variadic = key in impl.variadic
                if all(name is None for name, _ in binds):
                    vals = [v for _, v in binds]
                    static[key] = vals if variadic else (vals[0] if len(vals) == 1 else vals)
                else:
                    dynamic.append((key, variadic, tuple(binds)))
        except (PackageError, UnsupportedOpsError, ExecutionError):
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line naming the op
            raise ExecutionError(f"{self.path.name}: op {op.type} → {out_name!r} failed: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}") from exc
        blocks = tuple(self._compile_block(b, widened) for b in op.blocks)
        outputs = tuple(_output_decl(decl) for decl in op.outputs)
        return _Step(op.type, out_name, impl, static, tuple(dynamic), tuple(zip(impl.blocks, blocks)), outputs)

    def run(self, feeds: Mapping[str, np.ndarray], *,
            observe: Callable[[str, str, np.ndarray], None] | None = None,
            substitute: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run the main function on ``feeds`` (keyed by the function's input names); returns its outputs.

        ``observe(op_type, tensor_name, value)`` is called for every non-constant op output (activation statistics,
        ``mobilize diff``). ``substitute`` replaces op outputs by name once they are observed: the ops that read them
        get these values instead (cast to the declared dtype) — ``mobilize diff`` feeds each layer PyTorch's input.
        """
        plan = self.plan()
        env = dict(plan.constants)
        for inp in self.function.inputs:
            if inp.name not in feeds:
                raise ExecutionError(f"{self.path.name}: missing input {inp.name!r}")
            tt = inp.type.tensorType
            env[inp.name] = np.asarray(feeds[inp.name]).astype(_NP.get(_dtype_name(tt), np.float32), copy=False)
        with np.errstate(all="ignore"):
            self._run_steps(plan.main, env, observe, substitute)
        return {n: env[n] for n in self.output_names}

    def _run_steps(self, block: _Block, env: MutableMapping[str, Any],
                   observe: Callable[[str, str, np.ndarray], None] | None,
                   substitute: Mapping[str, np.ndarray] | None = None) -> None:
        for step in block.steps:
            outs = self._call(step, env, observe)
            if observe is not None:
                for name, val in outs:
                    observe(step.type, name, val)
            for name, val in outs if substitute else ():
                if name in substitute:
                    arr = np.asarray(val)
                    env[name] = np.asarray(substitute[name]).astype(arr.dtype, copy=False).reshape(arr.shape)

    def _block_fn(self, block: _Block, env: MutableMapping[str, Any],
                  observe: Callable[[str, str, np.ndarray], None] | None) -> Callable[[Any], list[Any]]:
        """A nested block as a callable: its input values → its output values (fresh scope on every call)."""
        def run_block(values: Any) -> list[Any]:
            values = list(values)
            if len(values) != len(block.inputs):
                raise ExecutionError(f"{self.path.name}: a nested block takes {len(block.inputs)} inputs, "
                                     f"got {len(values)}")
            scope: ChainMap[str, Any] = ChainMap(dict(zip(block.inputs, values)), env)
            self._run_steps(block, scope, observe)
            return [scope[n] for n in block.outputs]

        return run_block

    def _call(self, step: _Step, env: MutableMapping[str, Any],
              observe: Callable[[str, str, np.ndarray], None] | None) -> list[tuple[str, Any]]:
        """Run one compiled op: look up its tensor inputs, call the implementation, store its outputs in ``env``."""
        try:
            kwargs = dict(step.static)
            for key, variadic, binds in step.dynamic:
                vals = [_widen(env[name]) if name is not None else value for name, value in binds]
                kwargs[key] = vals if variadic else (vals[0] if len(vals) == 1 else vals)
            for key, block in step.blocks:
                kwargs[key] = self._block_fn(block, env, observe)
            result = step.impl.fn(**kwargs)
        except (PackageError, UnsupportedOpsError, ExecutionError):
            raise
        except Exception as exc:  # noqa: BLE001 - one clear line naming the op
            raise ExecutionError(f"{self.path.name}: op {step.type} → {step.out_name!r} failed: "
                                 f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(step.outputs):
            raise ExecutionError(f"{self.path.name}: op {step.type} → {step.out_name!r} produced {len(results)} "
                                 f"outputs, the program declares {len(step.outputs)}")
        done = []
        for decl, val in zip(step.outputs, results):
            val = self._declared(step.type, decl, val)
            env[decl.name] = val
            done.append((decl.name, val))
        return done

    def _declared(self, op_type: str, decl: _Output, val: Any) -> Any:
        """Cast to the declared dtype (fp16 rounding happens here) and check the declared static shape."""
        if not decl.checked or isinstance(val, str):
            return val
        arr = val if isinstance(val, np.ndarray) else np.asarray(val)
        if decl.dtype is not None and arr.dtype != decl.dtype:
            arr = arr.astype(decl.dtype)
        want = decl.shape
        if len(want) == arr.ndim and all(w is None or w == g for w, g in zip(want, arr.shape)):
            return arr
        if len(want) != arr.ndim and None not in want and int(np.prod(want)) == arr.size:
            return arr.reshape(want)  # rank-0 vs (1,) and the like: same values, the declared rank wins
        raise ExecutionError(f"{self.path.name}: op {op_type} → {decl.name!r} produced shape {list(arr.shape)}, "
                             f"the program declares {list(want)}")


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


@dataclasses.dataclass(frozen=True)
class _Output:
    name: str
    checked: bool  # False: returned as is (non-tensor or string outputs)
    dtype: Any  # numpy dtype to cast to, or None
    shape: tuple[int | None, ...]


def _output_decl(decl: Any) -> _Output:
    if decl.type.WhichOneof("type") != "tensorType":
        return _Output(decl.name, False, None, ())
    tt = decl.type.tensorType
    dname = _dtype_name(tt)
    if dname == "STRING":
        return _Output(decl.name, False, None, ())
    return _Output(decl.name, True, np.dtype(_NP[dname]) if dname in _NP else None, tuple(_static_shape(tt)))


@dataclasses.dataclass(frozen=True)
class _Step:
    """One op, compiled: ``static`` holds its attributes and constant inputs (decoded, widened), ``dynamic`` the
    parameters read from tensors at run time as (parameter, variadic, ((name or None, constant value), …))."""
    type: str
    out_name: str
    impl: OpImpl
    static: dict[str, Any]
    dynamic: tuple[tuple[str, bool, tuple[tuple[str | None, Any], ...]], ...]
    blocks: tuple[tuple[str, _Block], ...]
    outputs: tuple[_Output, ...]


@dataclasses.dataclass(frozen=True)
class _Block:
    inputs: tuple[str, ...]
    steps: tuple[_Step, ...]
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Plan:
    main: _Block
    constants: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Cached:
    constants: dict[str, Any]
    plan: _Plan | None
    nbytes: int


_CACHE: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _package_key(path: Path) -> tuple[Any, ...] | None:
    """The content of a package's files: every file's relative path, size and SHA-256 (≈ 2 GB/s, far cheaper than
    decoding the weights it saves). Content, not timestamps: a file rewritten within one timestamp tick, or a new
    package at a reused path and inode, cannot hit a stale entry. None when the package cannot be read."""
    import hashlib

    root = path.resolve()
    files = []
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                full = os.path.join(dirpath, f)
                with open(full, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
                files.append((os.path.relpath(full, root), os.path.getsize(full), digest))
    except OSError:
        return None
    return tuple(files)


def _nbytes(values: Mapping[str, Any]) -> int:
    return sum(v.nbytes for v in values.values() if isinstance(v, np.ndarray))


def _cache_get(key: tuple[Any, ...] | None) -> _Cached | None:
    if key is None:
        return None
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
        return hit


def _cache_put(key: tuple[Any, ...] | None, entry: _Cached) -> None:
    if key is None or entry.nbytes > CACHE_BYTES:
        return
    with _CACHE_LOCK:
        _CACHE[key] = entry
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_ENTRIES or sum(e.nbytes for e in _CACHE.values()) > CACHE_BYTES:
            _CACHE.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached program (decoded constants and compiled plans)."""
    with _CACHE_LOCK:
        _CACHE.clear()
