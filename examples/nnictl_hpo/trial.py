"""One nnictl HPO trial: train a small MLP on scikit-learn's digits with the tuner's hyper-parameters.

The tuner sends one sample of ``search_space.json``, e.g.
``{'lr': 0.02, 'momentum': 0.8, 'width': 96.0, 'depth': 2, 'dropout': 0.1, 'activation': 'gelu',
'batch_size': 32}``. The trial builds an MLP (``depth`` hidden layers of ``width`` units, each
``Linear -> activation -> Dropout``) on the 8x8 digits images flattened to 64 features and
standardised with the training split's statistics. It trains with ``SGD(lr, momentum)``, on the GPU
when the trial sees one, else on the CPU with one thread (trials share the CPU). It reports the
validation accuracy (%) after every epoch (``nni.report_intermediate_result``) and at the end
(``nni.report_final_result``). The validation split (25% of each class) and the initial weights
are fixed by ``--seed``, so the same parameters give the same result.

Outside an experiment ``nni.get_next_parameter()`` returns ``{}`` (with a RuntimeWarning), so
``python trial.py`` trains with ``DEFAULTS`` as a smoke test; NNI only logs the reports.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any, Dict, Mapping

import nni
import numpy as np
import torch
from torch import nn

# Used for every key the tuner does not send (all of them when the script runs outside NNI).
DEFAULTS: Dict[str, Any] = {"lr": 0.05, "momentum": 0.9, "width": 128, "depth": 2, "dropout": 0.1,
                            "activation": "relu", "batch_size": 32}

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def as_int(value: Any) -> int:
    """``randint``/``quniform`` values can arrive as floats (``96.0``) or strings: round them."""
    return int(round(float(value)))


def clean_params(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """Merge the tuner's parameters over ``DEFAULTS`` and cast them to the types the trial uses."""
    p = {**DEFAULTS, **(raw or {})}
    activation = str(p["activation"]).lower()
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {p['activation']!r}")
    return {
        "lr": float(p["lr"]),
        "momentum": min(max(float(p["momentum"]), 0.0), 0.999),
        "width": max(as_int(p["width"]), 1),
        "depth": max(as_int(p["depth"]), 1),
        "dropout": min(max(float(p["dropout"]), 0.0), 0.95),
        "activation": activation,
        "batch_size": max(as_int(p["batch_size"]), 1),
    }


def load_digits_split(seed: int, val_fraction: float = 0.25):
    """Digits (1797 images, 10 classes) as ``x_train, y_train, x_val, y_val`` float/long tensors.

    Class-stratified split fixed by ``seed``; features standardised with the training mean/std.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)          # [1797, 64]: the 8x8 images, flattened
    y = digits.target.astype(np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std < 1e-6] = 1.0                       # a few border pixels are always 0
    x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_va), torch.from_numpy(y_va))


def build_mlp(width: int, depth: int, dropout: float, activation: str, n_in: int = 64, n_out: int = 10) -> nn.Module:
    layers = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), ACTIVATIONS[activation](), nn.Dropout(dropout)]
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return 100.0 * (model(x).argmax(dim=1) == y).sum().item() / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="fixes the validation split and the initial weights")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: concurrent trials share the CPU)")
    args = parser.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    params = clean_params(nni.get_next_parameter() or {})
    # Printed to the trial's log, so the log always shows what this trial actually trained.
    print(f"parameters: {params}", flush=True)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x_tr, y_tr, x_va, y_va = (t.to(device) for t in load_digits_split(args.seed))
    torch.manual_seed(args.seed)
    model = build_mlp(params["width"], params["depth"], params["dropout"], params["activation"]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=params["momentum"])
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(args.seed)

    val_acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, n = 0.0, 0
        for idx in torch.randperm(len(x_tr), generator=generator).split(params["batch_size"]):
            idx = idx.to(device)
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        val_acc = accuracy(model, x_va, y_va)   # a diverged run (NaN loss) still gets a finite accuracy
        nni.report_intermediate_result(val_acc)
        train_loss = total / n
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f}"
              f"{' (diverged)' if not math.isfinite(train_loss) else ''}, val acc {val_acc:.2f}%", flush=True)
    nni.report_final_result(val_acc)
    print(f"final validation accuracy: {val_acc:.2f}% ({time.perf_counter() - start:.1f} s on {device})", flush=True)


if __name__ == "__main__":
    main()
