"""Load a model from the source grammar into a :class:`~mobilize.spec.ModelSpec`.

Grammar::

    path/to/file.py:fn     run fn() from a Python file (your own code: it is executed)
    package.module:fn      run fn() from an importable module
    zoo:NAME               a built-in model (``mobilize zoo`` lists them)
    path/to/model.pt2      a program written by ``torch.export.save`` (vetted: no arbitrary unpickling)

``fn()`` returns ``(module, example_inputs)`` or a ``ModelSpec``. Every failure is a one-line :class:`SourceError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import keyword
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from mobilize.errors import SourceError, SpecError, describe
from mobilize.spec import ModelSpec

_MODULE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def load_source(source: str, *, weights: str | Path | None = None, trust_pickle: bool = False) -> ModelSpec:
    """Resolve ``source`` to a ModelSpec whose module has been run once on its example inputs.

    Args:
        weights: optional checkpoint (.safetensors preferred, or torch.save) loaded into the module strictly.
        trust_pickle: allow arbitrary unpickling (of ``.pt2`` entries and ``weights``); only for trusted files.
    """
    if not isinstance(source, str) or not source.strip():
        raise SourceError("empty model source; give file.py:fn, package.module:fn, zoo:NAME or model.pt2")
    source = source.strip()
    if source.startswith("zoo:"):
        from mobilize import models

        spec = models.get(source[4:])
    elif _looks_like_pt2(source):
        spec = _load_pt2(Path(source), trust_pickle=trust_pickle)
    elif ":" in source:
        target, _, fn_name = source.rpartition(":")
        if not fn_name.isidentifier():
            raise SourceError(f"{source}: {fn_name!r} is not a function name; expected file.py:fn or package.module:fn")
        fn = _load_function(target, fn_name, source)
        spec = _call_builder(fn, source)
    else:
        raise SourceError(f"{source}: not a model source; expected file.py:fn, package.module:fn, zoo:NAME or "
                          "model.pt2")
    if weights is not None:
        if spec.exported_program is not None:
            raise SourceError(f"{source}: a .pt2 program carries its own weights; drop --weights")
        from mobilize.checkpoint import apply_weights

        apply_weights(spec.module, weights, trust_pickle=trust_pickle)
    _run_once(spec, source)
    return spec


def absolute_source(source: str) -> str:
    """``source`` with its file part made absolute (``file.py:fn``, ``model.pt2``), so that it names the same file
    from another working folder; ``zoo:NAME`` and ``package.module:fn`` are returned as they are."""
    text = source.strip()
    if text.startswith("zoo:"):
        return text
    target, colon, fn = text.rpartition(":")
    if colon and (target.endswith(".py") or os.sep in target or "/" in target):
        return f"{os.path.abspath(target)}:{fn}"
    if not colon and Path(text).exists():
        return os.path.abspath(text)
    return text


def _looks_like_pt2(source: str) -> bool:
    """A ``.pt2`` path, or any existing file whose content is a PT2 archive (content wins over extension)."""
    from mobilize.sniff import sniff

    p = Path(source)
    if ":" in source and not p.exists():
        return False
    if p.is_file():
        kind = sniff(p)
        if kind == "pt2":
            return True
        if kind in ("torch-zip", "pickle", "safetensors"):
            raise SourceError(f"{source}: this is a {kind} checkpoint (weights only, no architecture); give the "
                              "architecture as file.py:fn and the checkpoint with --weights")
        if source.endswith(".pt2"):
            raise SourceError(f"{source}: not a torch.export archive (content is {kind}); the file may be truncated "
                              "or mislabelled")
        return False
    return source.endswith(".pt2")


def _module_name(path: Path) -> str:
    """A module name for a user's file that depends only on its name and content: the exporters record it (ONNX
    metadata names ``<module>.MyNet``), so the same code gives byte-identical files in every process and on every
    machine — ``mobilize check`` compares sha256 with a baseline recorded elsewhere."""
    import hashlib

    stem = re.sub(r"\W", "_", path.stem)
    return f"_mobilize_user_{stem}_{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def _load_function(target: str, fn_name: str, source: str) -> Any:
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.exists():
            raise SourceError(f"{source}: file {target} does not exist")
        _read_source_file(path, SOURCE_LIMIT)  # a FIFO or device named as code is refused before Python opens it
        mod_name = _module_name(path)
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise SourceError(f"{source}: {target} is not a loadable Python file")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise SourceError(f"{source}: {target} line {exc.lineno}: syntax error: {exc.msg}") from exc
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, sys.exit() included
            raise SourceError(f"{source}: importing {target} raised {_user_error(exc)}") from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        if not _MODULE_RE.match(target):
            raise SourceError(f"{source}: {target!r} is neither a .py file nor a module path like package.module")
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise SourceError(f"{source}: module {exc.name!r} not found (is it installed or on PYTHONPATH?)") from exc
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            raise SourceError(f"{source}: importing {target} raised {_user_error(exc)}") from exc
    fn = getattr(module, fn_name, None)
    if fn is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        hint = f"; it defines: {', '.join(public[:8])}" if public else ""
        raise SourceError(f"{source}: {target} has no function {fn_name!r}{hint}")
    if not callable(fn):
        raise SourceError(f"{source}: {fn_name!r} in {target} is a {type(fn).__name__}, not a function")
    return fn


#: a Python source file larger than this is not a model builder
SOURCE_LIMIT = 64 << 20


def _user_error(exc: BaseException) -> str:
    """What user code raised, on one line; ``sys.exit()`` and other non-``Exception`` exits get a hint."""
    text = describe(exc, 240)
    if isinstance(exc, SystemExit):
        return f"{text} (the code called sys.exit(); it must return or raise an exception, not exit)"
    if not isinstance(exc, Exception):
        return f"{text} (a BaseException subclass; raise an Exception subclass instead)"
    return text


def _call_builder(fn: Any, source: str) -> ModelSpec:
    import torch

    try:
        result = fn()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - sys.exit() in a builder is a bad builder, not the end of the run
        raise SourceError(f"{source}: calling {getattr(fn, '__name__', 'the builder')}() raised "
                          f"{_user_error(exc)}") from exc
    if isinstance(result, ModelSpec):
        return result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        module, inputs = result
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        if not isinstance(inputs, tuple):
            raise SourceError(f"{source}: {fn.__name__}() returned example inputs of type {type(inputs).__name__}; "
                              "return a tuple of tensors")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", type(module).__name__) or "model"
        try:
            return ModelSpec(module=module, example_inputs=inputs, name=name)
        except SpecError as exc:
            raise SourceError(f"{source}: {exc}") from exc
    got = type(result).__name__
    if isinstance(result, tuple):
        got = f"a {len(result)}-tuple of ({', '.join(type(x).__name__ for x in result)})"
    raise SourceError(f"{source}: {fn.__name__}() returned {got}; it must return (torch.nn.Module, "
                      "tuple_of_example_tensors) or a mobilize.ModelSpec")


def _run_once(spec: ModelSpec, source: str) -> None:
    """Run the module on its example inputs; fills output names and checks outputs are tensors."""
    import torch

    if spec.exported_program is None:  # an ExportedProgram's module() refuses eval(); it is already inference-only
        spec.module.eval()
    _check_devices(spec, source)
    try:
        with torch.no_grad():
            out = spec.module(*spec.example_inputs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - sys.exit() in forward() is a failing model too
        raise SourceError(f"{source}: the model fails on its example inputs: {_user_error(exc)}") \
            from exc
    names, flat = flatten_outputs(out)
    bad = [i for i, t in enumerate(flat) if not isinstance(t, torch.Tensor)]
    if not flat or bad:
        raise SourceError(f"{source}: the model must return tensors (a tensor, a tuple/list or a dict of tensors); "
                          f"output {bad[0] if bad else 0} is {type(flat[bad[0]]).__name__ if bad else 'empty'}")
    if spec.output_names is None:
        taken = set(spec.input_names)
        unique = []
        for n in names:  # dict keys 'a-b' and 'a_b' both sanitise to a_b: keep names distinct
            base, k = n, 1
            while n in taken:
                n, k = f"{base}_{k}", k + 1
            taken.add(n)
            unique.append(n)
        spec.output_names = unique
    elif len(spec.output_names) != len(flat):
        raise SourceError(f"{source}: output_names has {len(spec.output_names)} names but the model returns "
                          f"{len(flat)} tensors")
    if spec.labels is not None:
        n = len(spec.labels)
        if not any(t.dim() >= 1 and t.shape[-1] == n for t in flat):
            shapes = ", ".join(f"{nm} {list(t.shape)}" for nm, t in zip(spec.output_names, flat))
            raise SourceError(f"{source}: labels has {n} class names but no output has {n} classes on its last "
                              f"axis ({shapes}); give one label per class of the classifier output")


def _check_devices(spec: ModelSpec, source: str) -> None:
    """Every parameter, buffer and example input must hold data on the CPU: a model built on the ``meta`` device has
    shapes but no values (nothing to export), and converters run on the CPU."""
    import torch

    named = [(f"parameter {n}", t) for n, t in spec.module.named_parameters()]
    named += [(f"buffer {n}", t) for n, t in spec.module.named_buffers()]
    named += [(f"example input {n!r}", t) for n, t in zip(spec.input_names, spec.example_inputs)]
    for what, t in named:
        if not isinstance(t, torch.Tensor) or t.device.type == "cpu":
            continue
        if t.device.type == "meta":
            raise SourceError(f"{source}: {what} is on the meta device (a shape without data); build the model on "
                              "the CPU, or materialise it (module.to_empty(device='cpu')) and load its weights")
        raise SourceError(f"{source}: {what} is on {t.device}; mobilize exports from the CPU — move the model and "
                          "its example inputs there (.cpu()) before returning them")


def model_call(spec: ModelSpec, args: tuple[Any, ...], what: str) -> Any:
    """``spec.module(*args)``; anything it raises (``sys.exit()`` included) is a one-line :class:`SourceError`."""
    try:
        return spec.module(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything
        raise SourceError(f"{spec.name}: the model fails on {what}: {_user_error(exc)}") from exc


def flatten_outputs(out: Any) -> tuple[list[str], list[Any]]:
    """Flatten a model's outputs; names come from dict keys where there are any, else ``output_i``."""
    import torch

    if isinstance(out, torch.Tensor):
        return ["output_0"], [out]
    if isinstance(out, dict):
        names, flat = [], []
        for k, v in out.items():
            sub_names, sub = flatten_outputs(v)
            key = re.sub(r"\W", "_", str(k))
            if not key.isidentifier() or keyword.iskeyword(key):
                key = f"output_{key}"
            names += [key] if len(sub) == 1 else [f"{key}_{n}" for n in sub_names]
            flat += sub
        return names, flat
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a NamedTuple: its fields name the outputs
        return flatten_outputs(dict(zip(out._fields, out)))
    if isinstance(out, (tuple, list)):
        flat = []
        for v in out:
            flat += flatten_outputs(v)[1]
        return [f"output_{i}" for i in range(len(flat))], flat
    return ["output_0"], [out]


# --- .pt2 ------------------------------------------------------------------------------------------------------


def _load_pt2(path: Path, *, trust_pickle: bool = False) -> ModelSpec:
    import torch

    data = _read_source_file(path, PT2_LIMIT)
    _vet_pt2(path, data, trust_pickle=trust_pickle)
    try:  # torch reads the very bytes that were vetted (a file changed or re-read in between cannot slip through)
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001
        raise SourceError(f"{path}: not a readable torch.export archive: {describe(exc, 240)}") from exc
    example = program.example_inputs
    if not example or not example[0]:
        raise SourceError(f"{path}: the archive holds no example inputs; save it with torch.export.save from a "
                          "program exported with example tensors")
    args, kwargs = example
    if kwargs:
        raise SourceError(f"{path}: keyword example inputs ({', '.join(kwargs)}) are not supported; export with "
                          "positional inputs")
    sig = program.graph_signature
    input_names = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    input_names = [n if n.isidentifier() else f"input_{i}" for i, n in enumerate(input_names)]
    spec = ModelSpec(module=program.module(check_guards=False), example_inputs=tuple(args),
                     input_names=input_names or None,
                     name=re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "model")
    spec.exported_program = program  # type: ignore[attr-defined]
    return spec


# What torch.export writes into expr_str: sympy constructors over symbols like s12/u0 and integer literals.
_SAFE_EXPR = re.compile(r"^[\sA-Za-z0-9_(),'=+\-*/<>%.]*$")
_SAFE_WORDS = {"Symbol", "Integer", "Mod", "FloorDiv", "CeilDiv", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
               "Add", "Mul", "Pow", "PythonMod", "CleanDiv", "IntTrueDiv", "FloatTrueDiv", "TruncToInt", "ToFloat",
               "Abs", "positive", "integer", "nonnegative", "True", "False", "And", "Or", "Not", "sympify", "oo",
               "Rational", "floor", "ceiling", "Piecewise", "ModularIndexing"}
_SYMBOL = re.compile(r"^[a-z]{1,2}\d+$")


#: a .pt2 is read into memory once, vetted, and handed to torch as those bytes
PT2_LIMIT = 8 << 30
#: archive entries torch.export.load reads as data (JSON, tensors, pickles vetted below); anything else is refused
_PT2_ENTRIES = re.compile(r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                          r"models/[^/]+\.json|data/(weights|constants)/[^/]+|data/sample_inputs/[^/]+\.pt|"
                          r"extra/[^/]+)$")


def _read_source_file(path: Path, limit: int) -> bytes:
    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import read_bytes

    try:
        return read_bytes(path, limit=limit)
    except MobilizeInputError as exc:
        msg = str(exc)
        if msg.endswith("no such file"):
            msg = f"{path}: file does not exist"
        raise SourceError(msg) from None


def _vet_pt2(path: Path, data: bytes, *, trust_pickle: bool) -> None:
    """Refuse a .pt2 that ``torch.export.load`` would let run code: an archive whose entries are ambiguous (a name
    twice — zip readers disagree on which copy counts — or entries torch's reader and Python's see differently),
    native code (AOTInductor libraries), program JSON that is code (always checked), and pickled entries that are
    more than tensors (unless ``trust_pickle``). Every entry is read through torch's own zip reader, so what is
    vetted is exactly what torch will load."""
    import torch

    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import check_zip_names

    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SourceError(f"{path}: not a torch.export archive (not a zip file: {exc})") from exc
    with z:
        names = z.namelist()
        expanded = sum(i.file_size for i in z.infolist())
    if expanded > PT2_LIMIT:  # torch inflates compressed entries: a small archive may declare a huge content
        raise SourceError(f"{path}: the archive expands to {expanded >> 20} MB, more than the {PT2_LIMIT >> 30} GB "
                          "mobilize loads; refusing it")
    try:
        check_zip_names(names, str(path))
    except MobilizeInputError as exc:
        raise SourceError(str(exc)) from None
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or any("/" not in n for n in names):
        raise SourceError(f"{path}: not a torch.export archive (its entries are not all in one folder); refusing it")
    prefix = f"{tops.pop()}/"
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = list(reader.get_all_records())
    except Exception as exc:  # noqa: BLE001 - torch's reader refuses what it cannot parse
        raise SourceError(f"{path}: not a readable torch.export archive ({describe(exc, 200)})") from None
    if sorted(records) != sorted(n[len(prefix):] for n in names if not n.endswith("/")):
        raise SourceError(f"{path}: torch's zip reader and Python's see different entries in this archive (a "
                          "crafted zip); refusing it")
    for rec in records:
        if rec.startswith("data/aotinductor/"):
            raise SourceError(f"{path}: the archive carries AOTInductor native code ({rec}), which torch.export.load "
                              "would load and run; mobilize only reads the exported program — save it with "
                              "torch.export.save")
        if not _PT2_ENTRIES.match(rec):
            raise SourceError(f"{path}: unexpected archive entry {rec!r} (not written by torch.export.save); "
                              "refusing the file")

    def read(name: str) -> bytes:
        return bytes(reader.get_record(name))

    _vet_program_json(path, records, read)
    if not trust_pickle:
        _vet_pickles(path, records, read)


def _vet_program_json(path: Path, records: list[str], read: Any) -> None:
    """Refuse program JSON that would run code on load: ``expr_str`` is parsed by ``sympy.sympify`` (which evaluates
    Python) and ``guards_code`` is exec'd by ``ExportedProgram.module()``. Applies even with ``--trust-pickle``."""
    for name in [n for n in records if n.startswith("models/") and n.endswith(".json")]:
        try:
            doc = json.loads(read(name))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SourceError(f"{path}: {name} is not valid JSON") from exc
        for key, value in _walk(doc):
            if key == "guards_code" and value:
                raise SourceError(f"{path}: {name} carries guards_code (Python that torch would execute); "
                                  "mobilize refuses it")
            if key == "expr_str" and isinstance(value, str) and not _safe_expr(value):
                raise SourceError(f"{path}: {name} has a symbolic expression that is not plain sympy "
                                  f"({value[:60]!r}); torch.export.load would evaluate it as Python, so mobilize "
                                  "refuses the file")


def _walk(doc: Any) -> Any:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                yield k, v
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


def _safe_expr(expr: str) -> bool:
    if not _SAFE_EXPR.match(expr) or "__" in expr or re.search(r"\.[A-Za-z_]", expr):
        return False
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expr):
        if word not in _SAFE_WORDS and not _SYMBOL.match(word):
            return False
    return True


def _vet_pickles(path: Path, records: list[str], read: Any) -> None:
    """Refuse a .pt2 whose pickled entries hold anything but tensors.

    ``torch.export.load`` unpickles weights, constants and sample inputs with ``weights_only=False``. Each pickled
    entry is first loaded with the restricted ``weights_only=True`` unpickler; if any needs more, or the archive holds
    custom/opaque objects, the file is refused before torch.export.load ever sees it.
    """
    import torch

    pickled: list[str] = []
    for cfg_name in [n for n in records if n.endswith(("_weights_config.json", "_constants_config.json"))]:
        try:
            cfg = json.loads(read(cfg_name))
        except (ValueError, KeyError, UnicodeDecodeError, RecursionError) as exc:
            raise SourceError(f"{path}: {cfg_name} is not valid JSON") from exc
        folder = cfg_name.rsplit("/", 1)[0]
        config = cfg.get("config") if isinstance(cfg, dict) else None
        if not isinstance(config, dict):
            raise SourceError(f"{path}: {cfg_name} is not a torch.export payload config")
        for fqn, meta in config.items():
            if not isinstance(meta, dict):
                raise SourceError(f"{path}: {cfg_name} entry {fqn!r} is not a payload record")
            pname = str(meta.get("path_name", ""))
            if pname.startswith(("custom_obj", "opaque_obj")):
                raise SourceError(f"{path}: constant {fqn!r} is a pickled Python object; mobilize does not "
                                  "unpickle untrusted files (pass --trust-pickle if you trust its author)")
            if meta.get("use_pickle"):
                pickled.append(f"{folder}/{pname}")
    pickled += [n for n in records if n.startswith("data/sample_inputs/") or n.endswith(".pt")]
    lookup = {r.lower(): r for r in records}  # torch's zip reader finds entries regardless of case
    for entry in dict.fromkeys(pickled):
        record = lookup.get(entry.lower())
        if record is None:
            continue  # torch.export.load fails on a missing entry: nothing of it runs
        try:
            torch.load(io.BytesIO(read(record)), weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"{path}: entry {entry} needs unrestricted unpickling ({type(exc).__name__}), which "
                              "would run code from the file; pass --trust-pickle only if you trust its author") \
                from exc
