"""Train the ``digits`` zoo model and write ``weights/digits.safetensors``.

Run::

    PYTHONPATH=src python -m mobilize.models.train_digits [--out PATH] [--epochs N]

Training is deterministic (fixed seed, fixed stratified 75/25 split with ``random_state=0``, single-threaded
torch, deterministic algorithms) and takes a few seconds on a laptop CPU. It prints the test accuracy and refuses to
write weights scoring below 0.95.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobilize.models.digits import WEIGHTS_PATH, DigitsCNN, digits_test_set, digits_train_set

SEED = 0
MIN_ACCURACY = 0.95


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel (zero padded with the normalised background value)."""
    pad_value = float(x.min())
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=pad_value)
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``model`` on normalised ``x``."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def train(epochs: int = 40, batch_size: int = 64, lr: float = 3e-3) -> tuple[DigitsCNN, float]:
    """Train from a fixed seed; returns the model (eval mode) and its test accuracy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = DigitsCNN()
        gen = torch.Generator().manual_seed(SEED)
        x_tr, y_tr = digits_train_set()
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                xb = _augment(xt[idx], gen)
                opt.zero_grad()
                loss = loss_fn(model(xb), yt[idx])
                loss.backward()
                opt.step()
                sched.step()
        x_te, y_te = digits_test_set()
        acc = evaluate(model, x_te, y_te)
        return model.eval(), acc
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def save(model: nn.Module, path: Path) -> None:
    """Write the state dict as safetensors (contiguous float32 / int64 tensors)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # a single metadata key: safetensors writes metadata in hash order, so several keys would make the bytes vary
    save_file(state, str(path), metadata={"source": f"mobilize.models.train_digits seed={SEED}"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilize.models.train_digits", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help=f"weights file (default: {WEIGHTS_PATH})")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    model, acc = train(epochs=args.epochs)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"digits: {n_params} parameters, test accuracy {acc:.4f}")
    if acc < MIN_ACCURACY:
        print(f"error: test accuracy {acc:.4f} is below {MIN_ACCURACY}; not writing {args.out}", file=sys.stderr)
        return 1
    save(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
