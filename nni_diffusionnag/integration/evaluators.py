"""Evaluators for NNI NAS experiments: NAS-Bench-201 table look-up and a small digits trainer.

- :class:`NB201Table` reads a NAS-Bench-201 accuracy table (CSV with an ``arch`` column of NB201
  strings and one column per metric) into ``{arch: value}``.
- :class:`TabularEvaluator` is an ``nni.nas.evaluator.Evaluator`` that reports the table value of
  a model's architecture without building the ``nn.Module``: fast, deterministic NAS runs and
  tests in both the ``sequential`` and the ``ts`` execution engine.
- :func:`train_digits` trains a NAS-Bench-201 network on scikit-learn's bundled digits images
  (no download) for use with ``FunctionalEvaluator(train_digits, epochs=2)``: a real, if tiny,
  training signal on CPU or GPU.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import compat

# The warnings filter must be in place before nni.nas.nn.pytorch is imported (below).
compat.install()

import nni  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402

from ..space.nasbench201 import NasBench201Space  # noqa: E402

__all__ = ["train_cifar10", "load_cifar10_tensors", "NB201Table", "load_nb201_table", "TabularEvaluator", "train_digits", "load_digits_tensors",
           "label_on_digits"]

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_ARCH_COLUMN = "arch"


# ---------------------------------------------------------------------------------------------
# NAS-Bench-201 table
# ---------------------------------------------------------------------------------------------
class NB201Table(Mapping):
    """One metric column of a NAS-Bench-201 CSV table, as a read-only ``{arch: value}`` mapping.

    The CSV must have an ``arch`` column holding NB201 strings
    (``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``) and the chosen numeric column, e.g.
    ``index,arch,cifar10_test_acc,cifar100_test_acc``.

    Parameters
    ----------
    path
        The CSV file.
    column
        The metric column to read (e.g. ``'cifar10_test_acc'``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file has no ``arch`` column, ``column`` is not a column of the file (the message
        lists the available ones), a value is not a number, or an architecture appears twice
        with different values.
    """

    def __init__(self, path: PathLike, column: str) -> None:
        self.path = Path(path).expanduser()
        self.column = column
        self._values: Dict[str, float] = {}
        self.columns: List[str] = []
        self._read()
        self._codec = NasBench201Space()

    def _read(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"NAS-Bench-201 table not found: {self.path} (expected a CSV with columns "
                f"'{_ARCH_COLUMN}' and '{self.column}')")
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            self.columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = self.columns
            if _ARCH_COLUMN not in self.columns:
                raise ValueError(f"{self.path} has no '{_ARCH_COLUMN}' column; its columns are {self.columns}")
            if self.column not in self.columns:
                available = [c for c in self.columns if c != _ARCH_COLUMN]
                raise ValueError(
                    f"column {self.column!r} is not in {self.path}; available columns: {available}")
            for line, row in enumerate(reader, start=2):
                arch = (row[_ARCH_COLUMN] or "").strip()
                raw = (row[self.column] or "").strip()
                try:
                    value = float(raw)
                except ValueError:
                    raise ValueError(f"{self.path}:{line}: {self.column}={raw!r} is not a number") from None
                previous = self._values.setdefault(arch, value)
                if previous != value and not (math.isnan(previous) and math.isnan(value)):
                    raise ValueError(f"{self.path}:{line}: architecture {arch} appears twice with different "
                                     f"{self.column} ({previous} and {value})")
        _logger.debug("Loaded %d architectures (%s) from %s", len(self._values), self.column, self.path)

    # --- Mapping ------------------------------------------------------------------------------
    def __getitem__(self, arch: str) -> float:
        try:
            return self._values[arch]
        except KeyError:
            raise KeyError(f"architecture {arch!r} is not in {self.path} ({len(self)} entries)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"NB201Table({str(self.path)!r}, {self.column!r}, {len(self)} architectures)"

    # --- NNI samples --------------------------------------------------------------------------
    def arch_of(self, sample: Mapping) -> str:
        """NB201 string of an NNI ``NasBench201`` sample (``{'cell/0_1': 'conv_3x3', ...}``)."""
        return self._codec.sample_to_arch(sample)

    def lookup(self, sample_or_arch: Union[str, Mapping]) -> float:
        """Value of an NB201 string or of an NNI sample dict."""
        arch = sample_or_arch if isinstance(sample_or_arch, str) else self.arch_of(sample_or_arch)
        return self[arch]


# One table per (file, column) per process: trial processes of the 'ts' engine and repeated
# evaluator instances (NNI re-creates traced evaluators on every load) read the CSV only once.
# The key includes the file's size and mtime so that a rewritten file is read again.
_TABLE_CACHE: Dict[Tuple[str, str, int, int], NB201Table] = {}
_TABLE_CACHE_LOCK = threading.Lock()


def load_nb201_table(path: PathLike, column: str) -> NB201Table:
    """:class:`NB201Table` for ``(path, column)``, cached per process.

    Raises the same errors as :class:`NB201Table`.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except FileNotFoundError:
        return NB201Table(resolved, column)  # raises the descriptive FileNotFoundError
    key = (str(resolved), column, stat.st_size, stat.st_mtime_ns)
    with _TABLE_CACHE_LOCK:
        table = _TABLE_CACHE.get(key)
        if table is None:
            table = NB201Table(resolved, column)
            _TABLE_CACHE[key] = table
        return table


@nni.trace
class TabularEvaluator(Evaluator):
    """Report a model's NAS-Bench-201 table value instead of training it.

    Overrides ``Evaluator._execute`` (which by default builds the ``nn.Module`` with
    ``model.executable_model()``) to look up the NB201 string of ``model.sample`` in the table and
    ``nni.report_final_result(value)`` - the same contract as NNI's ``BenchmarkEvaluator``. It is
    decorated with ``nni.trace`` so that NNI serialises it as ``TabularEvaluator(csv_path,
    column)``: 'ts' trial processes re-create it from those two small arguments and load the table
    themselves (once per process).

    Parameters
    ----------
    csv_path
        The CSV table (see :class:`NB201Table`). A relative path is resolved against the current
        directory of the process that reads it; NNI runs trials in the experiment's cwd, but an
        absolute path is safest.
    column
        The metric column, e.g. ``'cifar10_test_acc'`` or ``'cifar100_test_acc'``.

    Examples
    --------
    >>> evaluator = TabularEvaluator('/data/nb201_test_acc.csv', 'cifar10_test_acc')
    >>> exp = NasExperiment(NasBench201(), evaluator, strategy.Random(), config)
    """

    def __init__(self, csv_path: PathLike, column: str = "cifar10_test_acc") -> None:
        super().__init__()
        self.csv_path = str(csv_path)
        self.column = column
        # Read (and validate) the table now, so that a wrong path or column fails when the
        # experiment is set up, not in every trial.
        load_nb201_table(self.csv_path, self.column)

    @property
    def table(self) -> NB201Table:
        """The (per-process cached) table."""
        return load_nb201_table(self.csv_path, self.column)

    def extra_repr(self) -> str:
        return f"csv_path={self.csv_path!r}, column={self.column!r}"

    def evaluate(self, sample: Union[str, Mapping]) -> float:
        """Look up an NNI sample (or an NB201 string), report it as final result and return it.

        Unlike other evaluators this receives the sample, not an ``nn.Module`` (as NNI's
        ``BenchmarkEvaluator`` does).
        """
        value = float(self.table.lookup(sample))
        nni.report_final_result(value)
        return value

    def _execute(self, model: Any) -> float:
        sample = getattr(model, "sample", None)
        if sample is None:
            raise ValueError(f"{type(model).__name__} has no sample: freeze the model space before evaluating it")
        return self.evaluate(sample)

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, TabularEvaluator) and self.column == other.column
                and Path(self.csv_path).expanduser().resolve() == Path(other.csv_path).expanduser().resolve())

    def __hash__(self) -> int:
        return hash((str(Path(self.csv_path).expanduser().resolve()), self.column))


# ---------------------------------------------------------------------------------------------
# Digits training
# ---------------------------------------------------------------------------------------------
_DIGITS_CACHE: Dict[Tuple[int, int, float], Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def load_digits_tensors(image_size: int = 32, seed: int = 0, val_fraction: float = 0.25
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits (1797 8x8 images, 10 classes) as CIFAR-shaped tensors.

    Images are upsampled (bilinear) to ``image_size`` x ``image_size``, replicated to 3 channels
    and normalised with the training split's mean and standard deviation. The train/validation
    split is a fixed, class-stratified permutation given by ``seed``. Cached per process.

    Returns
    -------
    tuple
        ``(x_train, y_train, x_val, y_val)`` on the CPU, ``x`` of shape ``[n, 3, s, s]``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    key = (int(image_size), int(seed), float(val_fraction))
    if key not in _DIGITS_CACHE:
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:  # an optional dependency (extra 'examples')
            raise ImportError("train_digits needs scikit-learn: pip install 'nni-diffusionnag[examples]'") from err
        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # [n, 1, 8, 8]
        y = torch.from_numpy(digits.target.astype(np.int64))
        rng = np.random.RandomState(seed)
        val_idx: List[int] = []
        train_idx: List[int] = []
        for c in range(10):  # stratified: every class in both splits in the same proportion
            idx = np.flatnonzero(digits.target == c)
            rng.shuffle(idx)
            n_val = int(round(len(idx) * val_fraction))
            val_idx.extend(idx[:n_val])
            train_idx.extend(idx[n_val:])
        train_t = torch.as_tensor(rng.permutation(train_idx))
        val_t = torch.as_tensor(rng.permutation(val_idx))  # shuffled: any prefix is a fair subset
        if image_size != 8:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        mean, std = x[train_t].mean(), x[train_t].std()
        x = ((x - mean) / std).contiguous()
        _DIGITS_CACHE[key] = (x[train_t], y[train_t], x[val_t], y[val_t])
    return _DIGITS_CACHE[key]


def _recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over ``x``.

    After a handful of steps the running statistics (momentum 0.1, starting at mean 0 / var 1)
    are still mostly their initial values, so the network in eval mode scores near chance even
    when it has learnt something. One no-grad pass with ``momentum=None`` (cumulative average)
    fixes that; a common step in few-epoch NAS proxies.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=-1) == y[start:start + batch_size]).sum())
    return 100.0 * correct / max(len(x), 1)


def train_digits(model: torch.nn.Module, epochs: int = 2, batch_size: int = 32, lr: Optional[float] = None,
                 optimizer: str = "adam", weight_decay: float = 5e-4, max_train_samples: Optional[int] = 256,
                 max_val_samples: Optional[int] = 256, image_size: int = 32, val_fraction: float = 0.25,
                 recalibrate_bn: bool = True, device: Optional[Union[str, torch.device]] = None,
                 num_threads: Optional[int] = None, seed: int = 0) -> float:
    """Train a 10-class NAS-Bench-201 network on scikit-learn's digits and report accuracy.

    Meant for ``nni.nas.evaluator.FunctionalEvaluator(train_digits, epochs=2)``: NNI calls it with
    the instantiated model. Reports ``nni.report_intermediate_result(val_acc)`` after every epoch
    and ``nni.report_final_result(val_acc)`` at the end (accuracy in percent). Outside an NNI trial
    the reports are only logged by NNI.

    Parameters
    ----------
    model
        The network; it must map ``[n, 3, image_size, image_size]`` images to 10 logits
        (``NasBench201()`` with its default ``num_labels=10``).
    epochs
        Passes over the (possibly limited) training set.
    batch_size
        Mini-batch size (also used for evaluation).
    lr
        Learning rate, cosine-annealed to 0 over the run; default 3e-3 for Adam, 0.05 for SGD.
    optimizer
        ``'adam'`` (converges in the few steps of a short run) or ``'sgd'`` (momentum 0.9,
        Nesterov).
    weight_decay
        L2 penalty of the optimiser.
    max_train_samples
        Use at most this many training images (``None``: all 1347). A full NB201 network at 32x32
        takes about 1 s per batch of 64 on one CPU core, so the defaults keep a 2-epoch trial to
        seconds on a GPU and 10-20 s on a small CPU; ``image_size=16`` is about 6x faster.
    max_val_samples
        Evaluate on at most this many validation images (``None``: all 450).
    image_size
        Side of the upsampled images (32 = CIFAR resolution; NB201 needs a multiple of 4).
    val_fraction
        Fraction of each class held out for validation.
    recalibrate_bn
        Re-estimate BatchNorm statistics on the training images before each evaluation (see
        :func:`_recalibrate_batchnorm`); keeps short-run accuracies meaningful.
    device
        Where to train; default ``'cuda'`` if available, else ``'cpu'``.
    num_threads
        CPU only: run with ``torch.set_num_threads(num_threads)`` and restore the previous value
        afterwards (``None``: leave it). On a small, shared CPU, intra-op threads that compete
        with other processes can make each step 100x slower; ``1`` avoids that.
    seed
        Seeds the data split, the shuffling and torch's RNG (the weights were already initialised
        when the model was built).

    Returns
    -------
    float
        Final validation accuracy in percent.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 (NB201 halves it twice), got {image_size}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if lr is None:
        lr = 3e-3 if optimizer == "adam" else 0.05

    previous_threads = torch.get_num_threads()
    if num_threads is not None and device.type == "cpu":
        torch.set_num_threads(num_threads)
    try:
        return _train_digits(model, epochs, batch_size, lr, optimizer, weight_decay, max_train_samples,
                             max_val_samples, image_size, val_fraction, recalibrate_bn, device, seed)
    finally:
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)


def label_on_digits(model_space: Any, samples: Sequence[Mapping[str, Any]], epochs: int = 2,
                    max_train_samples: Optional[int] = 512, progress: bool = True, **train_kwargs: Any) -> np.ndarray:
    """Accuracy (%) of each NNI sample of ``model_space`` trained briefly with :func:`train_digits`.

    Outside NNI, for a few measured results to fit an accuracy surrogate on (as a user would from
    past trials). The model space must have 10 outputs (e.g. ``num_labels=10``). NNI's per-epoch
    "result" log lines are silenced; a progress bar shows the count.
    """
    nni_logger = logging.getLogger("nni")
    level = nni_logger.level
    nni_logger.setLevel(logging.WARNING)
    out = []
    try:
        for sample in tqdm(samples, desc="training on digits", disable=not progress):
            out.append(train_digits(model_space.freeze(dict(sample)), epochs=epochs,
                                    max_train_samples=max_train_samples, **train_kwargs))
    finally:
        nni_logger.setLevel(level)
    return np.asarray(out, dtype=np.float64)


def _train_digits(model: torch.nn.Module, epochs: int, batch_size: int, lr: float, optimizer: str,
                  weight_decay: float, max_train_samples: Optional[int], max_val_samples: Optional[int],
                  image_size: int, val_fraction: float, recalibrate_bn: bool, device: torch.device,
                  seed: int) -> float:
    x_train, y_train, x_val, y_val = load_digits_tensors(image_size, seed, val_fraction)
    if max_train_samples is not None:
        x_train, y_train = x_train[:max_train_samples], y_train[:max_train_samples]
    if max_val_samples is not None:
        x_val, y_val = x_val[:max_val_samples], y_val[:max_val_samples]
    return _train_classifier(model, (x_train, y_train, x_val, y_val), epochs, batch_size, lr, optimizer,
                             weight_decay, recalibrate_bn, device, seed, augment=False, name="digits")


def _train_classifier(model: torch.nn.Module, data: Tuple[torch.Tensor, ...], epochs: int, batch_size: int,
                      lr: float, optimizer: str, weight_decay: float, recalibrate_bn: bool, device: torch.device,
                      seed: int, augment: bool, name: str) -> float:
    """The training loop shared by the digits and CIFAR-10 evaluators; reports to NNI."""
    x_train, y_train, x_val, y_val = (t.to(device) for t in data)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = model.to(device)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                                     weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)

    val_acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            xb = _augment(x_train[idx], generator) if augment else x_train[idx]
            logits = model(xb)
            if epoch == 0 and step == 0 and (logits.dim() != 2 or logits.shape[-1] != 10):
                raise ValueError(f"the {name} evaluator needs a model with 10 outputs, got logits of shape "
                                 f"{tuple(logits.shape)}")
            loss = F.cross_entropy(logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
        if recalibrate_bn:
            _recalibrate_batchnorm(model, x_train, batch_size)
        val_acc = _accuracy(model, x_val, y_val, batch_size)
        _logger.info("%s epoch %d/%d: train loss %.4f, val acc %.2f%%",
                     name, epoch + 1, epochs, total_loss / len(x_train), val_acc)
        nni.report_intermediate_result(val_acc)
    nni.report_final_result(val_acc)
    return val_acc


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation on a batch: random 4-pixel-padded crop and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (2,), generator=generator).tolist()
    out = padded[:, :, dy:dy + h, dx:dx + w]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], out.flip(-1), out)


_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


def load_cifar10_tensors(data_dir: PathLike) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the official python archive extracted under ``data_dir``
    (``data_dir/cifar-10-batches-py/data_batch_1..5, test_batch``), normalised, ``[n, 3, 32, 32]``.

    If the folder is missing and torchvision is installed, torchvision downloads it there.
    """
    import pickle

    root = Path(data_dir).expanduser() / "cifar-10-batches-py"
    if not root.is_dir():
        try:
            import torchvision
        except ImportError:
            raise FileNotFoundError(
                f"CIFAR-10 not found at {root}: extract cifar-10-python.tar.gz into {Path(data_dir)} "
                "or install torchvision so it can download it") from None
        torchvision.datasets.CIFAR10(str(Path(data_dir).expanduser()), download=True)

    def read(names: List[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            with open(root / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
        mean = torch.tensor(_CIFAR_MEAN)[None, :, None, None]
        std = torch.tensor(_CIFAR_STD)[None, :, None, None]
        return (x - mean) / std, torch.from_numpy(np.concatenate(ys))

    x_train, y_train = read([f"data_batch_{i}" for i in range(1, 6)])
    x_test, y_test = read(["test_batch"])
    return x_train, y_train, x_test, y_test


def train_cifar10(model: torch.nn.Module, data_dir: str = "~/.cache/nni-diffusionnag/cifar10", epochs: int = 10,
                  batch_size: int = 256, lr: float = 0.1, weight_decay: float = 5e-4,
                  max_train_samples: Optional[int] = None, device: Optional[str] = None, seed: int = 0) -> float:
    """Train an NB201 network on CIFAR-10 (SGD, cosine schedule, crop + flip) and report the accuracy on
    the CIFAR-10 *test* split after every epoch (NB201's own protocol reports test accuracy too).

    Meant for ``FunctionalEvaluator(train_cifar10, data_dir=..., epochs=...)`` on a GPU; see
    ``examples/nasbench201_cifar10.py``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    x_train, y_train, x_test, y_test = load_cifar10_tensors(data_dir)
    if max_train_samples is not None:
        x_train, y_train = x_train[:max_train_samples], y_train[:max_train_samples]
    return _train_classifier(model, (x_train, y_train, x_test, y_test), epochs, batch_size, lr, "sgd", weight_decay,
                             False, torch.device(device), seed, augment=True, name="cifar10")
