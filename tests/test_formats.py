"""The format registry (mobilize.formats): every registered format is complete; option parsing."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mobilize import formats
from mobilize.errors import OptionError
from mobilize.export import onnx as onnx_export
from mobilize.runtime.base import Runner

FORMATS = sorted(formats.REGISTRY)


def test_registry_has_the_default_formats() -> None:
    assert set(formats.DEFAULT_FORMATS) <= set(formats.REGISTRY)
    assert set(formats.DEFAULT_PRECISIONS) <= set(formats.PRECISIONS)
    assert FORMATS  # guard against an empty parametrization below


@pytest.mark.parametrize("name", FORMATS)
def test_plugin_metadata(name: str) -> None:
    plugin = formats.REGISTRY[name]
    assert plugin.name == name
    assert plugin.suffix.startswith(".") and len(plugin.suffix) > 1
    assert plugin.precisions and set(plugin.precisions) <= set(formats.PRECISIONS)
    assert plugin.summary.strip()
    for attr in ("exporter", "runner", "io_reader", "analyzer", "finalizer", "placement"):
        mod, sep, obj = getattr(plugin, attr).partition(":")
        assert sep and mod.startswith("mobilize.") and obj.isidentifier(), f"{name}.{attr} is not 'module:object'"


@pytest.mark.parametrize("name", FORMATS)
def test_exporter_imports_and_has_the_exporter_signature(name: str) -> None:
    fn = formats.REGISTRY[name].load("exporter")
    assert callable(fn) and not inspect.isclass(fn)
    want = list(inspect.signature(onnx_export.export).parameters)
    assert list(inspect.signature(fn).parameters) == want


@pytest.mark.parametrize("name", FORMATS)
def test_runner_is_a_runner_subclass_for_this_format(name: str) -> None:
    cls = formats.REGISTRY[name].load("runner")
    assert inspect.isclass(cls) and issubclass(cls, Runner)
    assert cls.format == name
    assert isinstance(cls.runtime, str) and cls.runtime
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves abstract methods unimplemented"
    ok, why = cls.available()
    assert isinstance(ok, bool) and isinstance(why, str)


@pytest.mark.parametrize("name", FORMATS)
def test_io_reader_imports(name: str) -> None:
    fn = formats.REGISTRY[name].load("io_reader")
    assert callable(fn) and not inspect.isclass(fn)
    assert len(inspect.signature(fn).parameters) == 1


def test_register_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "REGISTRY", dict(formats.REGISTRY))
    with pytest.raises(ValueError, match="'onnx' is already registered"):
        formats.register(formats.REGISTRY["onnx"])
    clone = dataclasses.replace(formats.REGISTRY["onnx"], suffix=".other")
    with pytest.raises(ValueError, match="already registered"):
        formats.register(clone)
    assert formats.REGISTRY["onnx"].suffix == ".onnx"  # the first registration stays
    new = dataclasses.replace(formats.REGISTRY["onnx"], name="onnx2")
    assert formats.register(new) is new
    assert formats.get("onnx2") is new


def test_get_unknown_format() -> None:
    with pytest.raises(OptionError) as ei:
        formats.get("pytorch")
    assert "'pytorch'" in str(ei.value)
    for name in FORMATS:
        assert name in str(ei.value)


def test_plugin_load_unknown_attribute_fails_loudly() -> None:
    broken = dataclasses.replace(formats.REGISTRY["onnx"], runner="mobilize.runtime.onnx:NoSuchRunner")
    with pytest.raises(AttributeError):
        broken.load("runner")


ALLOWED = ("onnx", "coreml", "tflite")


@pytest.mark.parametrize("value, expected", [
    ("onnx", ["onnx"]),
    ("onnx,tflite", ["onnx", "tflite"]),
    (" tflite , onnx ", ["tflite", "onnx"]),
    ("onnx,onnx,tflite,onnx", ["onnx", "tflite"]),
    ("onnx,,tflite,", ["onnx", "tflite"]),
    (["coreml", "onnx", "coreml"], ["coreml", "onnx"]),
    (("tflite",), ["tflite"]),
])
def test_parse_list(value, expected) -> None:
    assert formats.parse_list(value, what="formats", allowed=ALLOWED) == expected


@pytest.mark.parametrize("value", ["", " ", ",", " , ,", [], ["", " "]])
def test_parse_list_rejects_empty(value) -> None:
    with pytest.raises(OptionError) as ei:
        formats.parse_list(value, what="formats", allowed=ALLOWED)
    assert "--formats is empty" in str(ei.value)
    assert "onnx, coreml, tflite" in str(ei.value)


@pytest.mark.parametrize("value, bad, hint", [
    ("onnx,tflight", "tflight", "tflite"),
    ("onxx", "onxx", "onnx"),
    ("core-ml", "core-ml", "coreml"),
])
def test_parse_list_unknown_with_did_you_mean(value, bad, hint) -> None:
    with pytest.raises(OptionError) as ei:
        formats.parse_list(value, what="formats", allowed=ALLOWED)
    msg = str(ei.value)
    assert f"unknown value {bad!r}" in msg
    assert f"did you mean {hint!r}?" in msg
    assert "choose from onnx, coreml, tflite" in msg


def test_parse_list_unknown_without_close_match() -> None:
    with pytest.raises(OptionError) as ei:
        formats.parse_list("zzzzzz", what="precisions", allowed=formats.PRECISIONS)
    msg = str(ei.value)
    assert msg.startswith("--precisions: unknown value 'zzzzzz'")
    assert "did you mean" not in msg
    assert "choose from fp32, fp16" in msg


def test_parse_list_ignores_case() -> None:
    assert formats.parse_list("FP16, Onnx", what="x", allowed=("fp16", "onnx")) == ["fp16", "onnx"]


@pytest.mark.parametrize("name", FORMATS)
def test_analyzer_imports_and_takes_a_path(name: str) -> None:
    fn = formats.REGISTRY[name].load("analyzer")
    assert callable(fn) and list(inspect.signature(fn).parameters) == ["path"]


# --- every stage knows every format (adding a format must touch each of these, or this fails) ------------------


@pytest.mark.parametrize("name", FORMATS)
def test_finalizer_takes_a_path_and_file_info(name: str) -> None:
    plugin = formats.REGISTRY[name]
    assert plugin.finalizer, f"{name} has no finalizer (metadata inside the file, reproducible bytes)"
    fn = plugin.load("finalizer")
    assert callable(fn) and list(inspect.signature(fn).parameters) == ["path", "info"]


@pytest.mark.parametrize("name", FORMATS)
def test_quantized_precisions_have_a_quantizer_module(name: str) -> None:
    import importlib

    from mobilize.quantize import recipes

    plugin = formats.REGISTRY[name]
    quantized = [p for p in plugin.precisions if p in recipes.QUANT_PRECISIONS]
    if not quantized:
        pytest.skip(f"{name} has no quantized precision")
    if plugin.converts_from:  # its quantized files are converted from the source format's (e.g. ort from onnx)
        name = plugin.converts_from
    mod = importlib.import_module(f"mobilize.quantize.{name}")  # the driver's convention (driver.module_for)
    assert list(inspect.signature(mod.quantize).parameters)[:6] == ["fp32", "dest", "recipe", "calib", "exclude",
                                                                    "work"]
    assert "method" in inspect.signature(mod.quantize).parameters
    assert callable(mod.layers) and list(inspect.signature(mod.layers).parameters) == ["fp32"]
    for prec in quantized:
        assert recipes.candidates(name, prec), f"{name} lists {prec} but has no recipe for it"
        if prec in recipes.STATIC_PRECISIONS:
            assert any(r.calibrated for r in recipes.candidates(name, prec))


@pytest.mark.parametrize("name", FORMATS)
def test_tolerances_diff_module_and_content_kind_exist(name: str) -> None:
    import importlib

    from mobilize.api import _KIND_OF_FORMAT
    from mobilize.diff import worker
    from mobilize.sniff import KINDS
    from mobilize.verify import tolerance

    for prec in ("fp32", "fp16"):
        assert (name, prec) in tolerance.DEFAULTS, f"no default parity tolerance for {name} {prec}"
    assert _KIND_OF_FORMAT.get(name) in KINDS, f"no content check (sniff kind) for {name} files"
    via = formats.REGISTRY[name].converts_from or name  # a converted format is diffed through its source's file
    assert via in worker.MODULES, f"mobilize diff cannot read {name} files"
    mod = importlib.import_module(worker.MODULES[via])
    assert callable(mod.read) and callable(mod.run)


def test_the_manifest_schema_knows_every_format() -> None:
    from mobilize.bundle import manifest

    enum = manifest.schema()["$defs"]["artifact"]["properties"]["format"]["enum"]
    assert set(enum) == set(formats.REGISTRY)


@pytest.mark.parametrize("name", FORMATS)
def test_placement_reader_imports_and_takes_path_and_options(name: str) -> None:
    fn = formats.REGISTRY[name].load("placement")
    assert callable(fn) and list(inspect.signature(fn).parameters) == ["path", "options"]


@pytest.mark.parametrize("name", FORMATS)
def test_converted_formats_name_a_registered_source_and_companions_are_suffixes(name: str) -> None:
    plugin = formats.REGISTRY[name]
    if plugin.converts_from:
        assert plugin.converts_from in formats.REGISTRY and plugin.converts_from != name
        assert set(plugin.precisions) == set(formats.REGISTRY[plugin.converts_from].precisions)
    assert all(c.startswith(".") and c != plugin.suffix for c in plugin.companions)


def test_converted_formats_come_after_their_source() -> None:
    assert formats.in_dependency_order(["ort", "tflite", "onnx"]) == ["tflite", "onnx", "ort"]
    assert formats.in_dependency_order(["onnx", "ort"]) == ["onnx", "ort"]
    assert formats.in_dependency_order(["ort"]) == ["ort"]


def test_quantized_converted_files_need_their_source_in_the_run() -> None:
    from mobilize.quantize.recipes import check_pairs

    src = {"ort": "onnx"}
    check_pairs(["onnx", "ort"], ["fp32", "int8"], converted_from=src)
    check_pairs(["ort"], ["fp32", "fp16"], converted_from=src)
    with pytest.raises(OptionError, match=r"ort int8 is converted from the onnx int8 file: add onnx"):
        check_pairs(["ort"], ["int8"], converted_from=src)
