"""``nni-diffusionnag check CONFIG``: an ``nnictl`` experiment config checked before ``nnictl create``.

NNI 3.0 runs a tuner's ``classArgsValidator`` (``meta.yml``) only for configs in the old v1 format.
With today's format ``nnictl create`` accepts any ``classArgs`` and returns; the experiment then
fails when its dispatcher builds the tuner: status ERROR before the first trial, the message in
the experiment's ``log/dispatcher.log``. :func:`check_config` reads the config with NNI's own
loader (what ``nnictl create`` reads), builds :class:`~.tuner.DiffusionNAGTuner` from its
``classArgs`` and encodes its search space, as the dispatcher would, and says what is wrong before
anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ..exceptions import DiffusionNAGError

__all__ = ["ConfigCheckError", "check_config"]

_CLASS = "DiffusionNAGTuner"


class ConfigCheckError(DiffusionNAGError):
    """The experiment config would not run DiffusionNAG: the message says where and why."""


def check_config(path: Union[str, Path]) -> str:
    """Check an experiment config file for ``nnictl create``; returns a one-line summary.

    Raises
    ------
    ConfigCheckError
        If NNI cannot read the config, its tuner is not DiffusionNAG, a ``classArgs`` value is
        invalid or the search space cannot be encoded (the message names what to fix).
    """
    from nni.experiment.config import ExperimentConfig

    from .tuner import DiffusionNAGTuner

    path = Path(path)
    if not path.is_file():
        raise ConfigCheckError(f"{path}: no such experiment config file")
    try:
        config = ExperimentConfig.load(str(path)).canonical_copy()  # relative paths resolved, search space read
    except Exception as err:  # noqa: BLE001 - NNI raises several types for a bad config
        raise ConfigCheckError(f"{path}: NNI cannot read this experiment config ({type(err).__name__}: {err})") from err
    tuner = config.tuner
    if tuner is None or not (str(tuner.name).lower() == "diffusionnag" or str(tuner.class_name).endswith(_CLASS)):
        what = "no tuner" if tuner is None else f"the tuner {tuner.name or tuner.class_name!r}"
        raise ConfigCheckError(f"{path}: the config has {what}; DiffusionNAG is `tuner: {{name: DiffusionNAG}}` "
                               f"(after `nnictl algo register --meta nni_diffusionnag/meta.yml`) or "
                               f"`className: nni_diffusionnag.tuner.{_CLASS}`")
    if tuner.name is not None:
        from nni.tools.package_utils.config_manager import get_algo_meta

        meta = get_algo_meta(tuner.name)
        if meta is None or not str(meta.class_name).endswith(_CLASS):
            raise ConfigCheckError(f"{path}: `tuner: {{name: {tuner.name}}}` is not registered with NNI in this "
                                   f"environment: run `nnictl algo register --meta nni_diffusionnag/meta.yml` once")
    try:
        built = DiffusionNAGTuner(**(tuner.class_args or {}))
        built.update_search_space(config.search_space)
    except (ValueError, TypeError, DiffusionNAGError) as err:
        raise ConfigCheckError(f"{path}: {err}") from err
    space = built.space
    return (f"{path}: OK. DiffusionNAG tuner with classArgs {tuner.class_args or {}}; search space "
            f"{len(space.labels)} decisions, {space.num_types} values in all")
