"""Core ML files an iOS app can hand to Vision: an image input and, for classifiers, class labels.

When the ModelSpec declares image normalisation, the image input becomes a Core ML ``ImageType`` (Vision and
``CVPixelBuffer`` feed it 8-bit pixels) and the normalisation moves *inside* the file: the program captured by
``torch.export`` is wrapped as ``inner((pixels / scale − mean) / std)`` and exported once more, so per-channel ``std``
is exact (Core ML's own ImageType preprocessing has a single scale for all channels)::

    image (ImageType, RGB, pixels 0…255) ─▶ mul(1/255) ─▶ sub(mean) ─▶ mul(1/std) ─▶ … the model …

When the spec has labels and the model has one output of ``len(labels)`` classes, the file gets a
``ClassifierConfig``: Core ML adds ``classLabel`` (the top class) and ``classLabel_probs`` (label → score), which is
what ``VNCoreMLRequest`` reports as ``VNClassificationObservation``\\ s.

Parity still verifies these files: the runners feed the image input in pixel space (the reference inputs mapped
through the normalisation the file declares in its metadata) and read ``classLabel_probs`` back as a vector in label
order (:mod:`mobilize.runtime.coreml`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mobilize.spec import ModelSpec

#: the names Core ML's classifier outputs get
CLASS_LABEL = "classLabel"
CLASS_PROBS = f"{CLASS_LABEL}_probs"


@dataclasses.dataclass(frozen=True)
class AppPlan:
    """Which input is an image (index, channel axis) and whether the file is a classifier."""

    image: int | None = None
    channel_axis: int = 1
    classifier: bool = False

    def notes(self, spec: ModelSpec) -> list[str]:
        out = []
        if self.image is not None:
            norm = spec.normalization
            assert norm is not None
            out.append(f"input {spec.input_names[self.image]!r} is a Core ML image ({norm.color}, pixels 0…"
                       f"{norm.scale:g}); the normalisation (pixels/{norm.scale:g} − mean) / std runs inside the "
                       "file, so Vision and CVPixelBuffer feed it directly")
        if self.classifier:
            out.append(f"classifier: outputs {CLASS_LABEL} (top label) and {CLASS_PROBS} (label → score, "
                       f"{len(spec.labels or [])} labels) for Vision's classification request")
        return out


def plan(spec: ModelSpec, output_shapes: list[tuple[int, ...]]) -> AppPlan:
    """The image input (the first float rank-4 input whose channel axis has one value per normalisation channel)
    and the classifier decision (labels given and exactly one output, shaped (1, len(labels)))."""
    image = None
    axis = 1
    norm = spec.normalization
    if norm is not None:
        axis = 1 if norm.layout == "NCHW" else 3
        for i, t in enumerate(spec.example_inputs):
            if t.dim() == 4 and t.is_floating_point() and t.shape[axis] == len(norm.mean) and len(norm.mean) in (1, 3):
                image = i
                break
    labels = spec.labels or []
    classifier = bool(labels) and len(output_shapes) == 1 and tuple(output_shapes[0]) == (1, len(labels))
    return AppPlan(image, axis, classifier)


class _PixelsIn:  # a factory: torch is imported lazily
    @staticmethod
    def build(inner: Any, index: int, mean: list[float], std: list[float], scale: float, axis: int) -> Any:
        import torch

        class PixelsIn(torch.nn.Module):
            """``inner`` with input ``index`` taken as pixels and normalised first."""

            def __init__(self) -> None:
                super().__init__()
                shape = [1, 1, 1, 1]
                shape[axis] = len(mean)
                self.inner = inner
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
                self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(shape))
                self.inv_scale = 1.0 / float(scale)

            def forward(self, *args: Any) -> Any:
                x = list(args)
                x[index] = (x[index] * self.inv_scale - self.mean) * self.inv_std
                return self.inner(*x)

        return PixelsIn()  # no .eval(): an ExportedProgram module refuses train(); it is inference-only already


def pixel_capture(capture: Any, spec: ModelSpec, app: AppPlan) -> Any:
    """``capture`` with its program re-exported behind the normalisation (see the module docstring)."""
    import torch

    from mobilize.capture import dynamic_shapes_for

    assert app.image is not None and spec.normalization is not None
    norm = spec.normalization
    shape = [1, 1, 1, 1]
    shape[app.channel_axis] = len(norm.mean)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(shape)
    std = torch.tensor(norm.std, dtype=torch.float32).view(shape)
    args = list(capture.example_inputs or spec.example_inputs)
    args[app.image] = (args[app.image] * std + mean) * norm.scale
    wrapper = _PixelsIn.build(capture.program.module(), app.image, list(norm.mean), list(norm.std), norm.scale,
                              app.channel_axis)
    dyn = dynamic_shapes_for(spec) if capture.dynamic else None
    with torch.no_grad():
        program = torch.export.export(wrapper, tuple(args), dynamic_shapes=dyn, strict=False)
    return dataclasses.replace(capture, program=program, example_inputs=tuple(args))


def image_type(ct: Any, spec: ModelSpec, app: AppPlan, shape: tuple[Any, ...]) -> Any:
    norm = spec.normalization
    assert norm is not None and app.image is not None
    channels = len(norm.mean)
    layout = (ct.colorlayout.GRAYSCALE if channels == 1 else
              ct.colorlayout.BGR if norm.color.upper() == "BGR" else ct.colorlayout.RGB)
    return ct.ImageType(name=spec.input_names[app.image], shape=shape, scale=1.0, bias=[0.0] * channels,
                        color_layout=layout, channel_first=app.channel_axis == 1)


def classifier_config(ct: Any, spec: ModelSpec) -> Any:
    return ct.ClassifierConfig(class_labels=list(spec.labels or []), predicted_feature_name=CLASS_LABEL)
