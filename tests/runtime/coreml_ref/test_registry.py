"""The op registry: duplicates refused at import, every op documented and linked, parameter names equal to the
MIL spec's (checked against coremltools' own op definitions), and the Core ML format's fallback runner wired up."""

from __future__ import annotations

import inspect

import pytest

from mobilize import formats
from mobilize.runtime.base import Runner
from mobilize.runtime.coreml_ref.registry import OPS, SPEC_ROOT, register, supported_ops


def test_duplicate_registration_is_refused() -> None:
    supported_ops()
    with pytest.raises(ValueError, match="already registered"):
        @register("add", "iOS15.elementwise_binary.add")
        def add_again(x, y):  # noqa: ANN001, ANN202
            """dup."""
            return x + y


def test_registration_needs_a_docstring() -> None:
    with pytest.raises(ValueError, match="docstring"):
        @register("__undocumented__", "iOS15.elementwise_binary.add")
        def undocumented(x):  # noqa: ANN001, ANN202
            return x
    assert "__undocumented__" not in OPS


@pytest.mark.parametrize("name", supported_ops())
def test_every_op_is_documented_and_linked(name: str) -> None:
    impl = OPS[name]
    assert impl.spec_url.startswith(SPEC_ROOT + "#coremltools.converters.mil.mil.ops.defs.iOS1")
    assert impl.spec_url.split(".")[-1] in (name, f"{name}")
    assert impl.spec_url in (impl.fn.__doc__ or "")


def test_parameter_names_match_the_mil_spec() -> None:
    """Each implementation accepts exactly the parameters MIL defines for that op (over all opset versions)."""
    import coremltools.converters.mil.mil.ops.defs  # noqa: F401 - registers coremltools' op definitions
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    problems = []
    for name, impl in sorted(OPS.items()):
        versions = [c for c in SSAOpRegistry.core_ops.get(name, {}).values() if c is not None]
        if not versions:
            problems.append(f"{name}: not a MIL op")
            continue
        mil = set().union(*(set(c.input_spec.input_types) for c in versions))
        if mil != set(impl.params):
            problems.append(f"{name}: MIL {sorted(mil)} vs implementation {sorted(impl.params)}")
        required = [p.name for p in inspect.signature(impl.fn).parameters.values() if p.default is p.empty]
        always = set.intersection(*({n for n, t in c.input_spec.input_types.items() if not t.optional}
                                    for c in versions))
        extra = [p for p in required if p not in always and not any(p in c.input_spec.input_types and
                                                                    not c.input_spec.input_types[p].optional
                                                                    for c in versions)]
        if extra:
            problems.append(f"{name}: parameters {extra} have no default but MIL makes them optional")
    assert not problems, "\n".join(problems)


def test_the_zoo_ops_are_covered() -> None:
    zoo_ops = {"const", "cast", "conv", "relu", "max_pool", "reduce_mean", "reshape", "linear", "clip", "add",
               "gather", "sub", "mul", "expand_dims", "layer_norm", "transpose", "slice_by_index", "matmul",
               "softmax", "gelu", "reduce_sum", "real_div", "reduce_l2_norm", "squeeze", "split", "sigmoid", "tanh",
               "concat", "gather_nd", "logical_and", "logical_not", "select", "equal", "reduce_max", "fill_like",
               "tile"}
    assert zoo_ops <= set(supported_ops())


def test_coreml_format_falls_back_to_the_reference_runner() -> None:
    plugin = formats.get("coreml")
    assert plugin.fallback_runner
    cls = plugin.load("fallback_runner")
    assert inspect.isclass(cls) and issubclass(cls, Runner) and not inspect.isabstract(cls)
    assert cls.format == "coreml" and cls.runtime == "reference"
    assert cls.available() == (True, "")
    for name, p in formats.REGISTRY.items():
        if p.fallback_runner:
            assert p.load("fallback_runner").format == name
