"""The model source grammar (mobilize.source): file.py:fn, package.module:fn, zoo:NAME, model.pt2.

Every user mistake must surface as a one-line SourceError that names the problem. The .pt2 tests build hostile
archives with tests/fixtures/make_fixtures.py and check that loading them never runs their payload.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

from fixtures import make_fixtures as mk
from mobilize.errors import MobilizeInputError, SourceError
from mobilize.source import _load_pt2, _looks_like_pt2, flatten_outputs, load_source
from mobilize.spec import ModelSpec

MODEL_PY = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)
"""


def _err(source: str) -> str:
    """load_source(source) must raise a one-line SourceError; return its message."""
    with pytest.raises(SourceError) as ei:
        load_source(source)
    msg = str(ei.value)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    assert msg.strip(), "empty message"
    return msg


# --- file.py:fn ------------------------------------------------------------------------------------------------


def test_file_fn_module_and_tuple(write_py) -> None:
    p = write_py("m.py", MODEL_PY + "\ndef build():\n    return Net(), (torch.randn(2, 4),)\n")
    spec = load_source(f"{p}:build")
    assert isinstance(spec, ModelSpec)
    assert spec.name == "Net"
    assert spec.input_names == ["x"]  # forward(self, x) names the input
    assert spec.output_names == ["output_0"]  # filled by running the model once
    assert spec.example_inputs[0].shape == (2, 4)
    assert not spec.module.training  # put in eval mode


def test_file_fn_module_and_single_tensor(write_py) -> None:
    p = write_py("single.py", MODEL_PY + "\ndef build():\n    return Net(), torch.randn(5, 4)\n")
    spec = load_source(f"{p}:build")
    assert isinstance(spec.example_inputs, tuple) and len(spec.example_inputs) == 1
    assert spec.example_inputs[0].shape == (5, 4)


def test_file_fn_module_and_list(write_py) -> None:
    p = write_py("lst.py", MODEL_PY + "\ndef build():\n    return Net(), [torch.randn(1, 4)]\n")
    assert load_source(f"{p}:build").example_inputs[0].shape == (1, 4)


def test_file_fn_returning_modelspec_keeps_its_names(write_py) -> None:
    p = write_py("spec.py", MODEL_PY + """
from mobilize import ModelSpec

def build():
    return ModelSpec(module=Net(), example_inputs=(torch.randn(1, 4),), input_names=["features"],
                     output_names=["scores"], labels=["a", "b", "c"], name="scorer")
""")
    spec = load_source(f"{p}:build")
    assert spec.name == "scorer"
    assert spec.input_names == ["features"] and spec.output_names == ["scores"]
    assert spec.labels == ["a", "b", "c"]


def test_source_is_stripped_and_helper_modules_beside_the_file_import(write_py) -> None:
    write_py("helper_mod_for_mobilize.py", MODEL_PY)
    p = write_py("uses_helper.py", """
import torch
from helper_mod_for_mobilize import Net

def build():
    return Net(), (torch.randn(1, 4),)
""")
    try:
        spec = load_source(f"  {p}:build  ")
        assert type(spec.module).__name__ == "Net"
        assert str(p.parent) not in sys.path  # the folder was only on sys.path while importing
    finally:
        sys.modules.pop("helper_mod_for_mobilize", None)


def test_dict_outputs_get_their_key_names(write_py) -> None:
    p = write_py("dictout.py", """
import torch

class M(torch.nn.Module):
    def forward(self, x):
        return {"logits": x * 2, "probs": torch.softmax(x, -1), "extra": (x + 1, x - 1)}

def build():
    return M(), (torch.randn(1, 3),)
""")
    spec = load_source(f"{p}:build")
    assert spec.output_names == ["logits", "probs", "extra_output_0", "extra_output_1"]


def test_tuple_outputs_are_numbered(write_py) -> None:
    p = write_py("tup.py", """
import torch

class M(torch.nn.Module):
    def forward(self, x):
        return x, (x * 2, [x * 3])

def build():
    return M(), (torch.randn(1, 3),)
""")
    assert load_source(f"{p}:build").output_names == ["output_0", "output_1", "output_2"]


def test_flatten_outputs_names_and_order() -> None:
    t = torch.zeros(1)
    assert flatten_outputs(t) == (["output_0"], [t])
    names, flat = flatten_outputs({"a b": t, "c": [t, t]})
    assert names == ["a_b", "c_output_0", "c_output_1"] and len(flat) == 3


@pytest.mark.parametrize("keys", [("0", "1st"), ("a-b", "a_b")], ids=["non-identifier", "collision"])
def test_derived_output_names_are_valid_unique_identifiers(write_py, keys) -> None:
    p = write_py(f"keys_{uuid.uuid4().hex[:8]}.py", f"""
import torch

class M(torch.nn.Module):
    def forward(self, x):
        return {{{keys[0]!r}: x * 2, {keys[1]!r}: x * 3}}

def build():
    return M(), (torch.randn(1, 3),)
""")
    try:
        spec = load_source(f"{p}:build")
    except SourceError:
        return  # refusing with a clear message is acceptable too
    names = list(spec.output_names)
    assert all(n.isidentifier() for n in names), names
    assert len(set(names)) == len(names), names


# --- package.module:fn -----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"mbz_pkg_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODEL_PY + "\nVALUE = 3\n\ndef build():\n    return Net(), (torch.randn(3, 4),)\n")
    (pkg / "broken.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        sys.modules.pop(mod, None)


def test_package_module_fn(tiny_package) -> None:
    spec = load_source(f"{tiny_package}.models:build")
    assert spec.example_inputs[0].shape == (3, 4)
    assert spec.output_names == ["output_0"]


def test_package_module_not_found(tiny_package) -> None:
    msg = _err(f"{tiny_package}.nope:build")
    assert "not found" in msg and "nope" in msg


def test_package_module_import_raises(tiny_package) -> None:
    msg = _err(f"{tiny_package}.broken:build")
    assert "RuntimeError" in msg and "import-time failure" in msg


def test_package_missing_function_lists_definitions(tiny_package) -> None:
    msg = _err(f"{tiny_package}.models:nope")
    assert "no function 'nope'" in msg
    assert "build" in msg and "Net" in msg


def test_package_not_callable(tiny_package) -> None:
    msg = _err(f"{tiny_package}.models:VALUE")
    assert "'VALUE'" in msg and "int" in msg and "not a function" in msg


@pytest.mark.parametrize("source", ["not-a.module:fn", "pkg..mod:fn"])
def test_bad_module_path(source) -> None:
    assert "module path" in _err(source)


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["", "   ", None])
def test_empty_source(source) -> None:
    with pytest.raises(SourceError, match="empty model source"):
        load_source(source)


def test_not_a_source() -> None:
    msg = _err("just_a_word")
    assert "not a model source" in msg and "zoo:NAME" in msg


def test_missing_file(tmp_path: Path) -> None:
    msg = _err(f"{tmp_path / 'missing.py'}:build")
    assert "does not exist" in msg and "missing.py" in msg


def test_bad_function_name(write_py) -> None:
    p = write_py("m.py", MODEL_PY)
    assert "not a function name" in _err(f"{p}:not-valid")


def test_missing_function_lists_what_the_module_defines(write_py) -> None:
    p = write_py("defs.py", MODEL_PY + "\ndef make_model():\n    pass\n\ndef helper():\n    pass\n\ndef _private():\n"
                 "    pass\n")
    msg = _err(f"{p}:build")
    assert "no function 'build'" in msg
    assert "it defines:" in msg
    for name in ("Net", "helper", "make_model"):
        assert name in msg
    assert "_private" not in msg


def test_not_callable(write_py) -> None:
    p = write_py("notcall.py", "build = 'a string'\n")
    msg = _err(f"{p}:build")
    assert "'build'" in msg and "str" in msg and "not a function" in msg


@pytest.mark.parametrize("ret, expect", [
    ("{'model': Net()}", "returned dict"),
    ("(Net(), torch.randn(1, 4), 3)", "3-tuple of (Net, Tensor, int)"),
    ("'zoo:digits'", "returned str"),
    ("(torch.randn(1, 4), Net())", "2-tuple of (Tensor, Net)"),
    ("None", "returned NoneType"),
    ("(Net(), {'x': torch.randn(1, 4)})", "example inputs of type dict"),
    ("(Net(), (torch.randn(1, 4), 'text'))", "example_inputs[1] is a str"),
])
def test_wrong_return_type(write_py, ret, expect) -> None:
    p = write_py(f"ret_{uuid.uuid4().hex[:8]}.py", MODEL_PY + f"\ndef build():\n    return {ret}\n")
    msg = _err(f"{p}:build")
    assert expect in msg
    if "example" not in expect:
        assert "must return (torch.nn.Module, tuple_of_example_tensors) or a mobilize.ModelSpec" in msg


def test_builder_raises_multiline_error_becomes_one_line(write_py) -> None:
    p = write_py("raises.py", "def build():\n    raise RuntimeError('first line\\nsecond line')\n")
    msg = _err(f"{p}:build")
    assert "calling build() raised RuntimeError" in msg
    assert "first line second line" in msg


def test_builder_spec_error_is_reported(write_py) -> None:
    p = write_py("badspec.py", MODEL_PY + "\nfrom mobilize import ModelSpec\n\ndef build():\n    return ModelSpec("
                 "module=Net(), example_inputs=(torch.randn(1, 4),), input_names=['a', 'b'])\n")
    msg = _err(f"{p}:build")
    assert "SpecError" in msg and "input_names" in msg


def test_syntax_error(write_py) -> None:
    p = write_py("syntax.py", "import torch\ndef build(:\n    pass\n")
    msg = _err(f"{p}:build")
    assert "syntax error" in msg and "line 2" in msg and "syntax.py" in msg


def test_import_time_error_in_file(write_py) -> None:
    p = write_py("imperr.py", "import does_not_exist_anywhere_xyz\n")
    msg = _err(f"{p}:build")
    assert "importing" in msg and "ModuleNotFoundError" in msg and "does_not_exist_anywhere_xyz" in msg


def test_model_fails_on_example_inputs(write_py) -> None:
    p = write_py("shape.py", MODEL_PY + "\ndef build():\n    return Net(), (torch.randn(2, 5),)\n")
    msg = _err(f"{p}:build")
    assert "fails on its example inputs" in msg and "RuntimeError" in msg
    assert len(msg) < 600  # long torch messages are shortened


@pytest.mark.parametrize("ret, kind", [("3", "int"), ("None", "NoneType"), ("(x, 'text')", "str"),
                                       ("()", "empty")])
def test_model_returns_non_tensor(write_py, ret, kind) -> None:
    p = write_py(f"nontensor_{uuid.uuid4().hex[:8]}.py", f"""
import torch

class M(torch.nn.Module):
    def forward(self, x):
        return {ret}

def build():
    return M(), (torch.randn(1, 3),)
""")
    msg = _err(f"{p}:build")
    assert "must return tensors" in msg and kind in msg


def test_output_names_count_mismatch(write_py) -> None:
    p = write_py("outnames.py", MODEL_PY + "\nfrom mobilize import ModelSpec\n\ndef build():\n    return ModelSpec("
                 "module=Net(), example_inputs=(torch.randn(1, 4),), output_names=['a', 'b'])\n")
    msg = _err(f"{p}:build")
    assert "output_names has 2 names but the model returns 1 tensors" in msg


# --- zoo -------------------------------------------------------------------------------------------------------


def test_unknown_zoo_name() -> None:
    msg = _err("zoo:no_such_model")
    assert "unknown zoo model 'no_such_model'" in msg and "digits" in msg


def test_zoo_typo_suggests() -> None:
    assert "did you mean 'digits'" in _err("zoo:digit")


# --- .pt2 ------------------------------------------------------------------------------------------------------


def test_pt2_loads(tiny_pt2: Path) -> None:
    spec = load_source(str(tiny_pt2))
    assert spec.input_names == ["features"]
    assert spec.example_inputs[0].shape == (1, 3)
    assert spec.output_names == ["output_0"]
    assert spec.exported_program is not None


def test_pt2_reader_keeps_example_inputs_and_signature_names(tiny_pt2: Path) -> None:
    spec = _load_pt2(tiny_pt2)
    assert spec.input_names == ["features"]  # from the graph signature, not input_0
    assert len(spec.example_inputs) == 1 and spec.example_inputs[0].shape == (1, 3)
    assert spec.name == "tiny"
    assert spec.exported_program is not None
    out = spec.module(*spec.example_inputs)
    assert out.shape == (1, 2)


def test_pt2_detected_by_content_not_extension(tiny_pt2: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin"
    shutil.copy(tiny_pt2, renamed)
    assert _looks_like_pt2(str(renamed))
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    assert not _looks_like_pt2(str(other_zip))
    assert not _looks_like_pt2(f"{renamed}:build")


def test_pt2_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _err(str(tmp_path / "nope.pt2"))


def test_pt2_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "junk.pt2"
    p.write_bytes(b"definitely not a zip file")
    assert "not a torch.export archive" in _err(str(p))


def test_pt2_entry_escaping_the_archive(tiny_pt2: Path, tmp_path: Path) -> None:
    p = mk.add_zip_entry(tiny_pt2, tmp_path / "slip.pt2", "../../escape.txt", b"x")
    assert "escapes the archive" in _err(str(p))


def test_pt2_custom_object_constant_refused(tiny_pt2: Path, tmp_path: Path) -> None:
    p = mk.custom_obj_pt2(tiny_pt2, tmp_path / "custom.pt2")
    msg = _err(str(p))
    assert "pickled Python object" in msg and "'evil'" in msg


@pytest.fixture
def quiet_torch_serde():
    """torch logs a malformed warning when its weights_only fallback kicks in; keep it out of the test output."""
    log = logging.getLogger("torch._export.serde.serialize")
    old = log.disabled
    log.disabled = True
    yield
    log.disabled = old


@pytest.mark.parametrize("via", ["sample_inputs", "weight"])
def test_malicious_pickle_pt2_is_refused_without_running_it(tiny_pt2: Path, tmp_path: Path, via: str) -> None:
    marker = tmp_path / "MARKER"
    evil = mk.malicious_pt2(tiny_pt2, tmp_path / f"evil_{via}.pt2", marker, via=via)
    msg = _err(str(evil))
    assert not marker.exists(), "loading the .pt2 ran its pickle payload"
    assert "unpickling" in msg
    assert ("sample_inputs" if via == "sample_inputs" else "weight_0") in msg  # names the offending entry


@pytest.mark.parametrize("via", ["sample_inputs", "weight"])
def test_malicious_pickle_fixture_is_live(tiny_pt2: Path, tmp_path: Path, via: str, quiet_torch_serde) -> None:
    """Control: torch.export.load itself does run the payload, so the refusal test above is meaningful."""
    marker = tmp_path / "MARKER"
    evil = mk.malicious_pt2(tiny_pt2, tmp_path / f"evil_{via}.pt2", marker, via=via)
    with contextlib.suppress(Exception):  # the payload returns None, so torch fails after running it
        torch.export.load(str(evil))
    assert marker.exists()


@pytest.mark.parametrize("kind", [
    pytest.param("sympy_expr"),
    pytest.param("guards_code"),
])
def test_pt2_program_json_code_is_refused_without_running_it(tiny_pt2: Path, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARKER"
    build = mk.sympy_expr_pt2 if kind == "sympy_expr" else mk.guards_code_pt2
    evil = build(tiny_pt2, tmp_path / f"evil_{kind}.pt2", marker)
    exc: BaseException | None = None
    try:
        spec = load_source(str(evil))
        with torch.no_grad():  # what export/verify do next with the loaded model
            spec.module(*spec.example_inputs)
    except Exception as e:  # noqa: BLE001
        exc = e
    assert not marker.exists(), f"loading/running the .pt2 executed code from its {kind}"
    # refusing the file (one-line SourceError) or loading it without ever running that code are both safe
    assert exc is None or isinstance(exc, SourceError), f"expected SourceError or a safe load, got {exc!r}"
    assert "\n" not in str(exc or "")


def test_source_error_is_input_error() -> None:
    assert issubclass(SourceError, MobilizeInputError)


def test_file_module_name_depends_on_name_and_content_only(tmp_path: Path) -> None:
    """Exporters record the module name (ONNX metadata): it must not vary between processes or folders."""
    from mobilize.source import _module_name

    a, b = tmp_path / "a" / "my-model.py", tmp_path / "b" / "my-model.py"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text("X = 1\n")
    assert _module_name(a) == _module_name(b)
    assert _module_name(a).startswith("_mobilize_user_my_model_") and _module_name(a).isidentifier()
    b.write_text("X = 2\n")
    assert _module_name(a) != _module_name(b)


def test_input_names_come_from_forward_and_output_names_from_a_namedtuple(write_py) -> None:
    p = write_py("named.py", """
import typing
import torch

class Out(typing.NamedTuple):
    boxes: torch.Tensor
    scores: torch.Tensor

class Det(torch.nn.Module):
    def forward(self, image, threshold):
        return Out(image * 2, image.sum(-1) > threshold)

def build():
    return Det(), (torch.randn(1, 4), torch.tensor(0.5))
""")
    spec = load_source(f"{p}:build")
    assert spec.input_names == ["image", "threshold"]
    assert spec.output_names == ["boxes", "scores"]


def test_forward_with_varargs_keeps_positional_names(write_py) -> None:
    p = write_py("va.py", """
import torch

class V(torch.nn.Module):
    def forward(self, *xs):
        return xs[0] + xs[1]

def build():
    return V(), (torch.randn(2), torch.randn(2))
""")
    assert load_source(f"{p}:build").input_names == ["input_0", "input_1"]


def test_labels_must_match_a_classifier_output(write_py) -> None:
    p = write_py("lab.py", MODEL_PY + """
from mobilize import ModelSpec

def build():
    return ModelSpec(Net(), (torch.randn(1, 4),), labels=["a", "b", "c", "d", "e"])

def ok():
    return ModelSpec(Net(), (torch.randn(1, 4),), labels=["a", "b", "c"])
""")
    with pytest.raises(SourceError, match=r"labels has 5 class names but no output has 5 classes on its last axis "
                                          r"\(output_0 \[1, 3\]\)"):
        load_source(f"{p}:build")
    assert load_source(f"{p}:ok").labels == ["a", "b", "c"]
