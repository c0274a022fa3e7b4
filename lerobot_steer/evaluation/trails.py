"""End-effector trails of predicted action chunks, drawn into the evaluation videos.

`--videos.trails=true` shows, in every recorded frame, where the chunk being executed was predicted
to take the gripper: whenever the policy predicts a new chunk, that chunk (postprocessed into env
units, exactly as the env receives it) is forward-simulated in a copy of the sim's MuJoCo state
(`SO101PickPlaceEnv.forecast_gripper_path`) and the gripper path is drawn until the next chunk.

For a steering checkpoint (`dsrl`, `dyna_vgd`) the frozen base's chunk for the same observations is
forward-simulated too and drawn beside it, so one frame shows what steering changed:

* dsrl: the base decoding fresh N(0, I) noise (what it does unsteered) vs the actor's noise;
* dyna_vgd: the base decoding the same initial noise without guidance vs with value guidance.

Each steering policy says what its reference is (`reference_chunk`, `reference_noise`, `reference_labels`).

The paths are drawn as MuJoCo scene geometry (spheres at the waypoints, capsules between them)
added to the `mjvScene` before rendering, so they are projected by the camera itself and depth-tested
against the scene; where the arm, block or bowl hides them (a chunk starts inside the gripper's
jaws) they show through at half strength. A legend in the frame's bottom band names
the colours. The policy's trail is magenta, the base's cyan: the arm is yellow, the block red, the
bowl blue and the floor brown, so orange, red or blue trails would blend in.

Only `predict_action_chunk` is tapped (on the instance, restored at the end), and the base decodes
with the policy's observation history passed explicitly and its own random generator, so the
evaluated episodes are exactly those without trails. Policies that predict no chunks (the scripted
expert, hold) get videos without trails.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import mujoco
import numpy as np
import torch

from lerobot_steer.sim.pick_place_env import SO101PickPlaceEnv, config_as_kwargs

logger = logging.getLogger(__name__)

POLICY, BASE = "policy", "base"
# RGBA in [0, 1] for MuJoCo; the legend uses the same colours.
TRAIL_RGBA = {POLICY: (1.0, 0.1, 0.85, 1.0), BASE: (0.1, 0.9, 1.0, 1.0)}
WAYPOINT_RADIUS = 0.006  # m
SEGMENT_RADIUS = 0.0025  # m


def is_steering(policy) -> bool:
    """A steering policy over a base adapter: it can decode the base's own chunk beside its own."""
    return hasattr(policy, "adapter") and callable(getattr(policy, "reference_chunk", None))


class ChunkTap:
    """Records every chunk `policy.predict_action_chunk` returns, and for a steering policy the
    base's chunk for the same observations.

    Installed as an instance attribute over the policy's method (LeRobot policies and ours call
    `self.predict_action_chunk` from `select_action` when their queue is empty; SmolVLA calls
    `self._get_action_chunk`, which is tapped instead); `close()` removes it.
    The base chunk is decoded with the adapter's current observation history given explicitly (so the
    history is not pushed twice) by the policy's `reference_chunk` (the policy says what its reference
    is: dsrl's base on its own prior, drawn from the tap's private generator so the run's random stream,
    and hence the episode, is the one without the tap; dyna_vgd's base on the same noise, unguided).
    """

    def __init__(self, policy, seed: int = 0):
        self.policy = policy
        self.steering = is_steering(policy)
        self.labels = getattr(policy, "reference_labels", None) if self.steering else None
        inner = not self.steering and callable(getattr(policy, "_get_action_chunk", None))
        self.method = "_get_action_chunk" if inner else "predict_action_chunk"
        self._original = getattr(policy, self.method)
        self._generator = None
        if self.steering:
            self._generator = torch.Generator(device=policy.adapter.device).manual_seed(seed)
        self._new: dict[str, torch.Tensor] | None = None
        setattr(policy, self.method, self._predict)

    def take(self) -> dict[str, torch.Tensor] | None:
        """The chunks (normalized, (B, T, action_dim)) predicted since the last call, keyed by
        POLICY (and BASE for a steering policy); None if none was predicted."""
        new, self._new = self._new, None
        return new

    def close(self) -> None:
        if vars(self.policy).get(self.method) == self._predict:
            delattr(self.policy, self.method)

    def _predict(self, batch, *args, **kwargs):
        if not self.steering:
            chunk = self._original(batch, *args, **kwargs)
            self._new = {POLICY: chunk.detach()}
            return chunk
        from lerobot_steer.policies.common.frozen_base import observations

        adapter = self.policy.adapter
        obs = observations(batch)
        noise = kwargs.get("noise", args[0] if args else None)
        if noise is None:
            # The very draw predict_action_chunk would make (same global RNG use), when the reference shares it.
            noise = self.policy.reference_noise(next(iter(obs.values())).shape[0])
            if noise is not None:
                kwargs["noise"], args = noise, ()
        chunk = self._original(batch, *args, **kwargs)
        history = {**obs, **adapter.history_frames()}
        base = self.policy.reference_chunk(history, noise, generator=self._generator)[:, : chunk.shape[1]]
        self._new = {POLICY: chunk.detach(), BASE: base.detach()}
        return chunk


class TrailOverlay:
    """Forecasts and draws chunk trails for the recorded rows of a vector env (see the module doc).

    `run_episodes` drives it when its recorder asks for trails: `start_batch()` per lock-step batch,
    `after_act(vec, rows)` after each policy call (forecasts from the state the chunk starts in),
    `render(vec, rows)` instead of the env's own render, `close()` at the end.

    Sync vector envs are read directly (their MjData is copied, never stepped). Async workers'
    states are copied into private "shadow" envs in this process (`sim_state`); a copied state is
    re-forwarded, so the arm and the trail's first point are drawn at the kinematics of the current
    state, up to one physics substep (well under 1 mm) ahead of what the worker itself would render.
    """

    def __init__(self, put, env_cfg, seed: int = 0):
        self.put, self.env_cfg = put, env_cfg
        self.tap = ChunkTap(put.policy, seed) if callable(getattr(put.policy, "predict_action_chunk", None)) else None
        if self.tap is None:
            logger.info("trails: '%s' predicts no action chunks; its videos have no trails", put.label)
        self.paths: dict[int, dict[str, np.ndarray]] = {}
        self._renderers: dict[int, tuple[Any, mujoco.Renderer]] = {}
        self._shadows: dict[int, SO101PickPlaceEnv] = {}

    @property
    def legend(self) -> list[tuple[str, tuple]]:
        if self.tap is None:
            return []
        if self.tap.labels is not None:
            policy_label, base_label = self.tap.labels
            return [(policy_label, TRAIL_RGBA[POLICY]), (base_label, TRAIL_RGBA[BASE])]
        return [("predicted chunk", TRAIL_RGBA[POLICY])]

    def start_batch(self) -> None:
        self.paths = {}
        if self.tap is not None:
            self.tap.take()

    def after_act(self, vec, rows) -> None:
        """If the policy just predicted a chunk, forecast the gripper path of each recorded row."""
        chunks = self.tap.take() if self.tap is not None else None
        if not chunks or not rows:
            return
        sims = self._sims(vec, rows)
        for name, chunk in chunks.items():
            actions = self.put.to_env_units(chunk)  # (B, T, 6), as the env would receive them
            for i in rows:
                self.paths.setdefault(i, {})[name] = sims[i].forecast_gripper_path(actions[i])

    def render(self, vec, rows) -> dict[int, np.ndarray]:
        """Frames of the chosen rows with their current trails and the legend."""
        if not rows:
            return {}
        sims = self._sims(vec, rows)
        frames = {}
        for i in rows:
            frame = render_with_trails(self._renderer(i, sims[i]), sims[i], self.paths.get(i, {}))
            frames[i] = draw_legend(frame, self.legend)
        return frames

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
        for _, renderer in self._renderers.values():
            renderer.close()
        for env in self._shadows.values():
            env.close()
        self._renderers, self._shadows = {}, {}

    def _sims(self, vec, rows) -> dict[int, SO101PickPlaceEnv]:
        if hasattr(vec, "envs"):
            return {i: vec.envs[i].unwrapped for i in rows}
        states = vec.get_attr("sim_state")
        for i in rows:
            if i not in self._shadows:
                self._shadows[i] = SO101PickPlaceEnv(**config_as_kwargs(self.env_cfg))
            self._shadows[i].sim_state = states[i]
        return {i: self._shadows[i] for i in rows}

    def _renderer(self, row: int, sim: SO101PickPlaceEnv) -> mujoco.Renderer:
        model, renderer = self._renderers.get(row, (None, None))
        if model is not sim.model:  # a new vector env (other batch size): new models
            if renderer is not None:
                renderer.close()
            cfg = sim.config
            renderer = mujoco.Renderer(sim.model, cfg.render_height, cfg.render_width)
            self._renderers[row] = (sim.model, renderer)
        return renderer


def add_trail(scene: mujoco.MjvScene, path: np.ndarray, rgba) -> int:
    """Append spheres at the waypoints of `path` (N, 3) and capsules between them to `scene`'s
    geoms (as many as fit); returns how many geoms were added."""
    rgba = np.asarray(rgba, dtype=np.float32)
    identity = np.eye(3).reshape(-1)
    added = 0
    for k, point in enumerate(path):
        for kind, args in (
            ("sphere", (point,)),
            *([("segment", (path[k - 1], point))] if k > 0 else []),
        ):
            if scene.ngeom >= scene.maxgeom:
                return added
            geom = scene.geoms[scene.ngeom]
            if kind == "sphere":
                mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_SPHERE, np.array([WAYPOINT_RADIUS, 0, 0]),
                                    np.asarray(args[0], dtype=np.float64), identity, rgba)
            else:
                mujoco.mjv_initGeom(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), identity, rgba)
                mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, SEGMENT_RADIUS,
                                     np.asarray(args[0], dtype=np.float64), np.asarray(args[1], dtype=np.float64))
            geom.emission = 0.6  # reads as its colour in shade too
            scene.ngeom += 1
            added += 1
    return added


def render_with_trails(renderer: mujoco.Renderer, sim: SO101PickPlaceEnv, paths: dict[str, np.ndarray]) -> np.ndarray:
    """The env's video frame (its render camera and size) with the trails drawn in the scene.

    Trails are depth-tested against the scene, so the camera shows them where they are; the parts
    hidden behind the arm, the block or the bowl (a chunk starts inside the gripper's jaws) are then
    blended in at half strength from a second render of the trails alone, so they stay readable.
    The base's trail is drawn first, the policy's on top where they coincide.
    """
    renderer.update_scene(sim.data, camera=sim.config.render_camera)
    scene = renderer.scene

    def add_all() -> int:
        return sum(add_trail(scene, paths[name], TRAIL_RGBA[name]) for name in (BASE, POLICY) if name in paths)

    if not add_all():
        return renderer.render()
    frame = renderer.render()
    scene.ngeom = 0  # the trails alone, on black: where they are in the picture, hidden or not
    add_all()
    skybox = scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX]
    scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
    try:
        alone = renderer.render()
    finally:
        scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = skybox
    mask = alone.max(axis=-1) > 8
    out = frame.copy()
    out[mask] = ((frame[mask].astype(np.uint16) + alone[mask]) // 2).astype(np.uint8)  # visible parts: frame == alone
    return out


def draw_legend(image: np.ndarray, entries: list[tuple[str, tuple]]) -> np.ndarray:
    """A colour swatch and a name per trail in a dark band at the bottom of an RGB frame."""
    if not entries:
        return image
    out = np.ascontiguousarray(image).copy()
    scale = max(out.shape[1] / 900, 0.25)
    line_h = int(22 * scale) + 4
    top = out.shape[0] - line_h - 2
    out[top:] = (out[top:] * 0.35).astype(out.dtype)
    x = 4
    for text, rgba in entries:
        colour = tuple(int(255 * c) for c in rgba[:3])
        size = max(line_h - 8, 3)
        y0 = top + (line_h - size) // 2 + 1
        cv2.rectangle(out, (x, y0), (x + size, y0 + size), colour, thickness=-1)
        x += size + 3
        cv2.putText(out, text, (x, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x += w + 10
    return out
