"""Compressed weights (coremltools.optimize.coreml): the interpreter runs the constexpr_* ops and agrees with the
same model after coremltools decompresses it, and stays close to the uncompressed original."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mobilize.runtime.coreml_ref.program import Program

from .conftest import save_program

R = np.random.default_rng(3)
W1 = R.standard_normal((16, 32)).astype(np.float32)
W2 = R.standard_normal((8, 16)).astype(np.float32)
WC = R.standard_normal((8, 4, 3, 3)).astype(np.float32)
X = R.standard_normal((2, 4, 6, 6)).astype(np.float32)


def _build(x):  # noqa: ANN001, ANN202
    h = mb.relu(x=mb.conv(x=x, weight=WC, pad_type="valid"))  # (2, 8, 4, 4)
    h = mb.reshape(x=mb.reduce_mean(x=h, axes=[-1]), shape=[2, 32])  # (2, 32)
    h = mb.linear(x=h, weight=W1)  # (2, 16)
    return mb.linear(x=mb.relu(x=h), weight=W2)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    import coremltools as ct

    d = tmp_path_factory.mktemp("cmp")
    save_program(_build, [X], d / "base16.mlpackage", target="iOS16")
    save_program(_build, [X], d / "base18.mlpackage", target="iOS18")
    return d, ct


def _compress(base_dir: Path, target: str, make_config, dest: Path) -> tuple[Path, Path]:  # noqa: ANN001
    """Compress the base model; also save coremltools' own decompression of the compressed model."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from mobilize._quiet import captured_output

    with captured_output():
        model = ct.models.MLModel(str(base_dir / f"base{target}.mlpackage"), skip_model_load=True)
        compressed = make_config(cto, model)
        compressed.save(str(dest))
        cto.decompress_weights(compressed).save(str(dest.with_name(dest.stem + "_decompressed.mlpackage")))
    return dest, dest.with_name(dest.stem + "_decompressed.mlpackage")


def _run(path: Path) -> tuple[np.ndarray, list[str]]:
    p = Program(path)
    return next(iter(p.run({p.input_names[0]: X}).values())), p.op_types()


CONFIGS = {
    "int8_per_channel": ("16", "constexpr_affine_dequantize", lambda cto, m: cto.linear_quantize_weights(
        m, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                           weight_threshold=0)))),
    "uint8_asymmetric": ("16", "constexpr_affine_dequantize", lambda cto, m: cto.linear_quantize_weights(
        m, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear", dtype="uint8",
                                                                           weight_threshold=0)))),
    "palettize_kmeans_4bit": ("16", "constexpr_lut_to_dense", lambda cto, m: cto.palettize_weights(
        m, cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4,
                                                                      weight_threshold=0)))),
    "prune_50": ("16", "constexpr_sparse_to_dense", lambda cto, m: cto.prune_weights(
        m, cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5,
                                                                           weight_threshold=0)))),
    "int4_per_block_ios18": ("18", "constexpr_blockwise_shift_scale", lambda cto, m: cto.linear_quantize_weights(
        m, cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear", dtype="int4", granularity="per_block", block_size=4, weight_threshold=0)))),
    "palettize_grouped_ios18": ("18", "constexpr_lut_to_dense", lambda cto, m: cto.palettize_weights(
        m, cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
            mode="uniform", nbits=2, granularity="per_grouped_channel", group_size=4, weight_threshold=0)))),
    "prune_ios18": ("18", "constexpr_sparse_to_dense", lambda cto, m: cto.prune_weights(
        m, cto.OptimizationConfig(global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5,
                                                                           weight_threshold=0)))),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_compressed_model_matches_decompressed_reference(name: str, base, tmp_path: Path) -> None:  # noqa: ANN001
    base_dir, _ = base
    target, op, make = CONFIGS[name]
    compressed, decompressed = _compress(base_dir, target, make, tmp_path / f"{name}.mlpackage")
    got, ops = _run(compressed)
    assert op in ops, ops
    want, want_ops = _run(decompressed)
    assert not any(o.startswith("constexpr_") for o in want_ops)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
    original, _ = _run(base_dir / f"base{target}.mlpackage")
    assert not np.array_equal(got, original)  # the weights really were compressed
    cos = float((got * original).sum() / np.linalg.norm(got) / np.linalg.norm(original))
    assert cos > MIN_COSINE_TO_ORIGINAL[name], cos  # lossy, but still the same model


# random Gaussian weights: 50 % pruning and 2-bit palettes lose a lot; 8-bit loses little
MIN_COSINE_TO_ORIGINAL = {"int8_per_channel": 0.999, "uint8_asymmetric": 0.999, "palettize_kmeans_4bit": 0.98,
                          "prune_50": 0.5, "int4_per_block_ios18": 0.98, "palettize_grouped_ios18": 0.5,
                          "prune_ios18": 0.5}


def test_vector_palettization_and_constexpr_cast_directly() -> None:
    """Ops whose producers are awkward to drive through coremltools, against NumPy directly."""
    from mobilize.runtime.coreml_ref.ops.constexpr import constexpr_cast, constexpr_lut_to_dense

    idx = np.array([[0, 1], [1, 0], [0, 0]], np.uint8)  # (3, 2) indices, vector size 2 along axis 0
    lut = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)  # (1, 1, palettes=2, vector=2)
    out = constexpr_lut_to_dense(indices=idx, lut=lut, vector_axis=0)
    want = np.array([[1, 3], [2, 4], [3, 1], [4, 2], [1, 1], [2, 2]], np.float32)
    np.testing.assert_array_equal(out, want)
    half = np.array([1.5, -2.25], np.float16)
    assert constexpr_cast(source_val=half, output_dtype="fp32").dtype == np.float32


def test_quantize_dequantize_activation_ops(run_mil) -> None:  # noqa: ANN001
    x = R.standard_normal((2, 5)).astype(np.float32) * 3
    out, = run_mil(lambda v: mb.dequantize(input=mb.quantize(input=v, scale=np.float32(0.05),
                                                             zero_point=np.int8(3), output_dtype="int8"),
                                           scale=np.float32(0.05), zero_point=np.int8(3)),
                   x, op="quantize", target="iOS17")
    q = np.clip(np.rint(x / 0.05) + 3, -128, 127)
    np.testing.assert_allclose(out, (q - 3) * 0.05, atol=1e-6)


def test_joint_sparse_ops_directly() -> None:
    """iOS18 joint compression (pruned + palettized / pruned + quantized) against NumPy."""
    from mobilize.runtime.coreml_ref.ops.constexpr import (
        constexpr_lut_to_sparse,
        constexpr_sparse_blockwise_shift_scale,
        constexpr_sparse_to_dense,
    )

    mask = np.array([[1, 0, 1], [0, 1, 1]], np.uint8)
    lut = np.array([[[[10.0], [20.0]]]], np.float32)  # (1, 1, palettes=2, vector=1)
    m, nz = constexpr_lut_to_sparse(indices_mask=mask, indices_nonzero_data=np.array([1, 0, 0, 1], np.uint8),
                                    lut=lut)
    dense = constexpr_sparse_to_dense(nonzero_data=nz, mask=m)
    np.testing.assert_array_equal(dense, [[20, 0, 10], [0, 10, 20]])
    m, nz = constexpr_sparse_blockwise_shift_scale(
        data_mask=mask, nonzero_data=np.array([2, 4, -2, 6], np.int8), scale=np.array([[0.5], [2.0]], np.float32),
        offset=np.array([[0], [1]], np.int8))
    np.testing.assert_allclose(constexpr_sparse_to_dense(nonzero_data=nz, mask=m), [[1, 0, 2], [0, -6, 10]])
