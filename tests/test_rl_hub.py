"""Whether lerobot-steer-rl uploads its policy is decided from the parsed config, never from sys.argv,
so that `train(cfg)` in-process behaves like the CLI; a push that cannot happen fails before training.

The Hub is never contacted here: `HfApi` is replaced by a fake whose `whoami` succeeds or fails.
"""

from __future__ import annotations

import sys

import draccus
import pytest
from helpers_bases import diffusion_base, one_thread  # noqa: F401  (pytest fixtures)

from lerobot_steer.policies.dsrl import DSRLConfig
from lerobot_steer.policies.dyna_vgd import DynaVGDConfig
from lerobot_steer.rl import hub
from lerobot_steer.rl.config import SteerRLConfig


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`; records the logins it was asked to check."""

    calls: list[str] = []
    error: Exception | None = None

    def whoami(self):
        FakeHub.calls.append("whoami")
        if FakeHub.error is not None:
            raise FakeHub.error
        return {"name": "someone"}


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHub.calls, FakeHub.error = [], None
    monkeypatch.setattr(hub, "HfApi", FakeHub)
    # A command line that says the opposite of every config below: it must not be read.
    monkeypatch.setattr(sys, "argv", ["lerobot-steer-rl", "--policy.push_to_hub=false", "--policy.repo_id=argv/ignored"])
    return FakeHub


def _parsed(*args: str) -> SteerRLConfig:
    """A config as the CLI parses it, from explicit arguments (not sys.argv)."""
    return draccus.parse(SteerRLConfig, args=["--policy.type=dsrl", *args])


def test_no_repo_id_no_push_and_no_hub_access(fake_hub):
    assert DSRLConfig().push_to_hub is False and DynaVGDConfig().push_to_hub is False
    assert hub.push_requested(_parsed()) is False
    assert fake_hub.calls == []


@pytest.mark.parametrize("spelling", ["true", "True", "yes"])
def test_an_explicit_push_without_a_repo_id_is_an_error_naming_the_flag(fake_hub, spelling):
    cfg = _parsed(f"--policy.push_to_hub={spelling}")
    with pytest.raises(ValueError, match="--policy.repo_id"):
        hub.push_requested(cfg)
    assert fake_hub.calls == []  # refused before any network access


def test_a_repo_id_pushes_after_checking_the_login(fake_hub):
    assert hub.push_requested(_parsed("--policy.repo_id=me/dsrl")) is True
    assert fake_hub.calls == ["whoami"]
    assert hub.push_requested(_parsed("--policy.repo_id=me/dsrl", "--policy.push_to_hub=yes")) is True


def test_push_to_hub_false_wins_over_a_repo_id(fake_hub):
    assert hub.push_requested(_parsed("--policy.repo_id=me/dsrl", "--policy.push_to_hub=false")) is False
    assert fake_hub.calls == []


def test_the_decision_is_saved_in_the_policy_config():
    """config.json holds true/false, so a reloaded policy (or lerobot-train's own check) sees the same."""
    assert draccus.encode(DSRLConfig())["push_to_hub"] is False
    assert draccus.encode(DSRLConfig(repo_id="me/dsrl"))["push_to_hub"] is True


def test_no_login_or_no_network_fails_with_the_fix(fake_hub):
    fake_hub.error = OSError("Token is required but no token found")
    with pytest.raises(RuntimeError, match="hf auth login") as raised:
        hub.push_requested(_parsed("--policy.repo_id=me/dsrl"))
    assert "--policy.push_to_hub=false" in str(raised.value) and "no token found" in str(raised.value)


@pytest.mark.parametrize("error", [None, OSError("offline")])
def test_train_in_process_refuses_an_impossible_push_before_any_work(fake_hub, diffusion_base, tmp_path, error):
    from lerobot_steer.rl.train import train

    fake_hub.error = error
    repo = {} if error is None else {"repo_id": "me/dsrl"}
    cfg = SteerRLConfig(policy=DSRLConfig(base_policy_path=str(diffusion_base), device="cpu", push_to_hub=True, **repo),
                        output_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError if error is None else RuntimeError):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing built, nothing trained


def test_resume_layers_the_given_flags_not_sys_argv(diffusion_base, tmp_path, monkeypatch):
    from lerobot_steer.rl.checkpoint import save_config
    from lerobot_steer.rl.train import _resume_config

    run = tmp_path / "run"
    run.mkdir()
    cfg = SteerRLConfig(policy=DSRLConfig(base_policy_path=str(diffusion_base), device="cpu"), output_dir=run, steps=64)
    cfg.validate()
    save_config(cfg, run / "train_config.json")
    monkeypatch.setattr(sys, "argv", ["lerobot-steer-rl", "--steps=5"])
    resumed = _resume_config(SteerRLConfig(resume=True, output_dir=run), ["--resume=true", f"--output_dir={run}",
                                                                          "--steps=128"])
    assert resumed.steps == 128 and resumed.policy.type == "dsrl" and resumed.resume
