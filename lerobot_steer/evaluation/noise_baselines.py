"""The free baselines of a noise-steered base: the same checkpoint, decoded from other initial noise.

A steering method is only worth its training if it beats what a user gets for free from the base
itself. For a diffusion / flow-matching base three noise choices cost nothing:

* `gaussian`: fresh N(0, I) noise per chunk, what LeRobot's own `select_action` does;
* `zero`: the all-zero initial noise, the mode of the prior (a weak base is often much better there);
* `tanh`: tanh(N(0, I)), the bounded noise the VGD reference acts with (std about 0.63);
* `executed`: N(0, I) on the steps the base executes and zero on the others (a diffusion base
  denoises `horizon` steps but executes `n_action_steps` of them; noise on the steps it never
  executes still leaks into the executed ones through its temporal convolutions). This is where
  DSRL's `noise_layout=executed` starts from (its default `repeat_executed` repeats one vector
  over the same steps).

In `--policy_paths` they are written `noise:<kind>:<checkpoint>`, e.g.
`lerobot-steer-eval --policy_paths='[noise:zero:<base>,noise:tanh:<base>,<base>,<fine-tuned>]'`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lerobot_steer.steering.denoisers import make_denoiser

NOISE_PREFIX = "noise:"
NOISE_KINDS = ("gaussian", "zero", "tanh", "executed")


def parse_noise_spec(spec: str) -> tuple[str, str]:
    """`noise:<kind>:<path>` -> (kind, path); the error names the valid kinds."""
    kind, sep, path = spec.removeprefix(NOISE_PREFIX).partition(":")
    if not sep or kind not in NOISE_KINDS or not path:
        raise ValueError(f"'{spec}': write noise:<kind>:<checkpoint> with kind one of {NOISE_KINDS}, "
                         "e.g. noise:zero:outputs/train/base/checkpoints/last/pretrained_model")
    return kind, path


def initial_noise(
    kind: str, shape: tuple[int, ...], device=None, dtype=None, executed: slice | None = None
) -> Tensor:
    """Initial noise (B, chunk_length, width) of one of the free baselines; `executed` is the time
    slice the base executes (needed by kind `executed`)."""
    if kind == "zero":
        return torch.zeros(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, device=device, dtype=dtype)
    if kind == "executed":
        if executed is None:
            raise ValueError("noise kind 'executed' needs the executed time slice of the base")
        kept = torch.zeros_like(noise)
        kept[:, executed] = noise[:, executed]
        return kept
    return torch.tanh(noise) if kind == "tanh" else noise


class FixedNoiseBase:
    """A base policy whose every new chunk starts from `initial_noise(kind)` (LeRobot's `noise=`)."""

    def __init__(self, policy, kind: str):
        if kind not in NOISE_KINDS:
            raise ValueError(f"noise kind {kind!r} is not one of {NOISE_KINDS}")
        self.policy, self.kind = policy, kind
        self._denoiser = make_denoiser(policy)  # refuses a base that takes no initial noise, naming it
        self.config = policy.config
        self.name = f"{getattr(policy, 'name', 'base')}[noise={kind}]"

    def reset(self) -> None:
        self.policy.reset()

    def eval(self):
        self.policy.eval()
        return self

    def select_action(self, batch: dict, **kwargs) -> Tensor:
        obs = next(v for k, v in batch.items() if k.startswith("observation.") and isinstance(v, Tensor))
        param = next(self.policy.parameters())
        noise = initial_noise(self.kind, self._denoiser.noise_shape(obs.shape[0]), param.device, param.dtype,
                              executed=self._denoiser.executed_slice)
        return self.policy.select_action(batch, noise=noise, **kwargs)
