"""Load weights safely: safetensors preferred, ``torch.load(weights_only=True)`` otherwise.

Arbitrary unpickling happens only when the caller passes ``trust_pickle=True`` (CLI: ``--trust-pickle``, recorded
in the manifest), because unpickling runs code chosen by whoever wrote the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilize.errors import SourceError, one_line
from mobilize.sniff import sniff


def load_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """A ``{name: tensor}`` state dict from a ``.safetensors`` file or a ``torch.save`` checkpoint.

    A checkpoint that holds ``{"state_dict": {...}}`` or ``{"model": {...}}`` is unwrapped.
    """
    import torch

    from mobilize.errors import MobilizeInputError
    from mobilize.safeio import refuse_special

    p = Path(path)
    try:
        refuse_special(p, "--weights")  # a FIFO or device is refused before anything opens it
    except MobilizeInputError as exc:
        raise SourceError(str(exc)) from None
    if not p.is_file():
        raise SourceError(f"{p}: checkpoint file does not exist")
    kind = sniff(p)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise SourceError(f"{p}: unreadable safetensors file ({type(exc).__name__}: {exc})") from None
    if kind not in ("torch-zip", "pickle"):
        raise SourceError(f"{p}: not a checkpoint (content is {kind}); give a .safetensors file or a torch.save file")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).lower()
        if not trust_pickle and ("weights_only" in msg or "unpickl" in msg or "unsupported global" in msg):
            raise SourceError(f"{p}: the checkpoint holds Python objects beyond tensors, and loading them would run "
                              "code from the file; convert it to safetensors, or pass --trust-pickle if you trust "
                              "its author") from None
        raise SourceError(f"{p}: unreadable checkpoint ({type(exc).__name__}: {one_line(exc, 200)})") \
            from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SourceError(f"{p}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj


def apply_weights(module: Any, path: str | Path, *, trust_pickle: bool = False) -> None:
    """Load a checkpoint into ``module`` strictly: every missing or unexpected key is listed in one error."""
    state = load_state_dict(path, trust_pickle=trust_pickle)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc).splitlines()[0])
        raise SourceError(f"{path}: weights do not fit the model: {first}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} key(s) e.g. {result.missing_keys[:3]}")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} key(s) e.g. {result.unexpected_keys[:3]}")
    if problems:
        raise SourceError(f"{path}: weights do not fit the model: {'; '.join(problems)}")
