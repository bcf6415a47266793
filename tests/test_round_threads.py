"""A proposal round runs with the configured torch threads and gives the caller's setting back."""

import pytest
import torch

from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.prior.model import SamplerConfig
from nni_diffusionnag.search.config import SearchConfig
from nni_diffusionnag.search.core import SearchCore
from nni_diffusionnag.space import NasBench201Space


def _core(threads):
    config = SearchConfig.from_kwargs(seed=0, warmup=2, batch_size=2, n_candidates=8, device="cpu", threads=threads,
                                      surrogate=SurrogateConfig(hidden=8, steps=5, ensemble=2),
                                      sampler=SamplerConfig(num_steps=4))
    return SearchCore(NasBench201Space(), config)


@pytest.mark.parametrize("threads", [1, 0])
def test_round_uses_the_configured_threads_and_restores_them(threads, monkeypatch):
    before = torch.get_num_threads()
    core = _core(threads)
    seen = []
    real = core.generator.generate

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(core.generator, "generate", spy)
    try:
        torch.set_num_threads(2)
        for _ in range(3):  # warm-up round, then guided ones
            for i, sample in enumerate(core.propose(2)):
                core.observe(sample, float(i))
        assert seen and set(seen) == {1 if threads == 1 else 2}
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(before)


def test_threads_is_validated():
    with pytest.raises(ValueError, match="threads"):
        SearchConfig.from_kwargs(threads=-1)
