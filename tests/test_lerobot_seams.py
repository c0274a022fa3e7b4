"""Every LeRobot 0.6.1 internal this package relies on, pinned in one place.

When a LeRobot upgrade moves one of them, the failure is here, naming the seam and the code of ours
that depends on it, rather than somewhere downstream (a recorded episode that silently reuses its
scene, a checkpoint that loads half its weights, a guidance hook that is never called).
"""

from __future__ import annotations

import inspect
import logging

import pytest


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_log_say_logs_the_recording_announcement_through_the_root_logger(caplog):
    """sim/robot.py draws a new scene when it sees "Recording episode N" logged by the recorder."""
    from lerobot.utils import utils

    from lerobot_steer.sim.robot import EPISODE_ANNOUNCEMENT

    with caplog.at_level(logging.INFO):
        utils.log_say(f"{EPISODE_ANNOUNCEMENT} 3", play_sounds=False)
    records = [r for r in caplog.records if r.getMessage() == f"{EPISODE_ANNOUNCEMENT} 3"]
    assert records, "seam moved: lerobot.utils.utils.log_say no longer logs its text (sim/robot.py listens for it)"
    assert records[0].name == "root", (
        f"seam moved: log_say now logs through '{records[0].name}', not the root logger (sim/robot.py's filter)"
    )
    for module in ("lerobot.scripts.lerobot_record", "lerobot.rollout.strategies.episodic"):
        source = inspect.getsource(__import__(module, fromlist=["_"]))
        assert 'log_say(f"Recording episode {dataset.num_episodes}"' in source, (
            f"seam moved: {module} no longer announces 'Recording episode N' (sim/robot.py needs it)"
        )


def test_algorithm_factory_resolves_the_class_through_its_module_attribute():
    """rl/registry.py replaces factory.get_algorithm_class so make_algorithm finds our types."""
    from lerobot.rl.algorithms import factory

    assert "get_algorithm_class" in inspect.getsource(factory.make_algorithm), (
        "seam moved: make_algorithm no longer calls get_algorithm_class (rl/registry.py patches it)"
    )
    import lerobot_steer  # noqa: F401  (registers)

    assert factory.get_algorithm_class("dsrl").__name__ == "DSRLAlgorithm"
    assert factory.get_algorithm_class("dyna_vgd").__name__ == "DynaVGDAlgorithm"


def test_pretrained_policy_loads_weights_through_load_as_safetensor():
    """policies/common/frozen_base.py overrides _load_as_safetensor to leave the frozen base out."""
    from lerobot.policies.pretrained import PreTrainedPolicy

    assert _params(PreTrainedPolicy._load_as_safetensor) == ["model", "model_file", "map_location", "strict"], (
        "seam moved: PreTrainedPolicy._load_as_safetensor changed its signature (frozen_base.py overrides it)"
    )
    assert "cls._load_as_safetensor(" in inspect.getsource(PreTrainedPolicy.from_pretrained), (
        "seam moved: from_pretrained no longer loads through _load_as_safetensor (frozen_base.py overrides it)"
    )


def test_flow_matching_euler_integrate_takes_the_rtc_hook_our_guidance_uses():
    """steering/denoisers.py guides pi0 / pi05 / SmolVLA through euler_integrate's rtc_processor."""
    from lerobot.policies.common.flow_matching import euler_integrate

    params = _params(euler_integrate)
    for name in ("denoise_fn", "noise", "num_steps", "rtc_processor", "rtc_enabled"):
        assert name in params, f"seam moved: euler_integrate lost '{name}' (steering/denoisers.py passes it)"


def test_ddim_previous_timestep_rule_matches_the_scheduler_proxy():
    """steering/denoisers.py rebuilds a guided DDIM step at t - num_train_timesteps // N, the rule
    of diffusers' DDIMScheduler.step that LeRobot's diffusion policy samples with."""
    from diffusers import DDIMScheduler

    source = inspect.getsource(DDIMScheduler.step)
    assert "timestep - self.config.num_train_timesteps // self.num_inference_steps" in source, (
        "seam moved: DDIMScheduler.step changed its previous-timestep rule (steering/denoisers.py copies it)"
    )


@pytest.mark.parametrize("column", ["next.reward", "next.success", "next.done"])
def test_generated_dataset_columns_are_the_ones_the_chunk_mdp_reads(column):
    """The chunk MDP reads rewards and successes from these frame columns (policies/common)."""
    from lerobot_steer.policies.common.config import FrozenBaseConfig
    from lerobot_steer.sim.generate import dataset_features
    from lerobot_steer.sim.pick_place_env import PickPlaceConfig

    features = dataset_features(PickPlaceConfig(obs_type="state"))
    assert column in features, f"the generator no longer writes {column}"
    assert FrozenBaseConfig.reward_key == "next.reward"
