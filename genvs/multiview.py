"""Multi-view joint denoising (lesson 08): several views of one object denoised together, attending to each other.

Lesson 07's route denoises each view alone, so two views of one object agree only as far as the field's renders
make them. Here the self-attention layers of the base U-Net and of the ControlNet attend across the views of one
object (MVDream, Viewset Diffusion, SyncDreamer; Text2Video-Zero's cross-frame attention): a batch holds ``V``
consecutive views per object, and every token of a view attends over the tokens of all ``V`` views::

    q, k, v: [objects * V, tokens, C]  ->  [objects, V * tokens, C]      softmax(q k^T / sqrt(d)) v      -> back

Views of different objects never meet (:class:`CrossViewAttnProcessor`); with ``V = 1`` it is diffusers' own
attention exactly.

**Cameras.** Without more, a token does not know which view it comes from, nor where that view's camera is. A
:class:`CameraEmbedding` tells every attention layer: each view's Pluecker rays, relative to the group's first view
(:func:`relative_rays`), mapped by a zero-initialised 1x1 convolution per layer and added to the tokens that make
queries and keys (MVDream's camera embedding, CAT3D's ray maps, EscherNet's camera positional encoding)::

    q = W_q (h + P_l(r)),   k = W_k (h + P_l(r)),   v = W_v h

**Training** (:func:`train_multiview`, the seed reimplementation's recipe): groups of views of one object, the first
1 to ``max_clean`` of them *clean* conditioning views (they also build the feature field; they enter as themselves
at the low noise level :data:`CLEAN_SIGMA` and carry no loss), the rest noisy with **one noise level per object**
shared by its noisy views; per-view conditioning dropout. The base stays frozen; the ControlNet, started from
lesson 07's (and the camera embedding, when there is one), learns to use the other views.

**Generation** (:func:`sample_jointly`, :func:`generate_orbit`): a group per object = its clean input view(s),
*guides* (views generated earlier, given fresh noise at the current noise level at every step, their outputs
discarded) and the new views, which alone the sampler moves::

    group(sigma) = [ y_input @ CLEAN_SIGMA,  g + sigma * eps @ sigma,  x @ sigma ]      x <- step(x, D(group)[new])

Long orbits go in chunks (each chunk guided by the previous chunk) or autoregressively (one view at a time, guided
by a few random earlier views and the previous one, as GeNVS's own trajectories).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from genvs.artefacts import shipped_path
from genvs.cameras import pluecker_rays
from genvs.controlnet import (
    CONTROLNET_FIT,
    GUIDANCE_SCALE,
    WEIGHTS_VARIANT,
    EDMUNet,
    FitConfig,
    fit_network,
    load_base,
    load_controlnet,
)
from genvs.data.batches import StepBatches
from genvs.data.srn import SRNDataset
from genvs.denoiser import drop_condition, k_diffusion, sample_training_sigmas
from genvs.sampling import conditioning_set, guided, karras_sigmas, sample_karras, seeded_noise
from genvs.seeding import derive_seed, draw

__all__ = ["ViewGroups", "relative_rays", "CameraEmbedding", "attention_heads", "CrossViewAttnProcessor",
           "attention_weights", "recording", "MultiViewUNet", "MultiViewControlNet", "multiview_denoiser",
           "CLEAN_SIGMA", "MULTIVIEW_FIT", "CAMERA_FILE", "group_loss", "train_multiview", "load_multiview",
           "multiview_route", "sample_jointly", "ORBIT_MODES", "orbit_plan", "generate_orbit"]

CLEAN_SIGMA = 0.05
"""The noise level a clean conditioning view is given (it enters unnoised): low, yet one the base and the ControlNet
saw in training (``ln 0.05 = -3.0``, 1.5 standard deviations below the base's mean log-sigma)."""
MULTIVIEW_FIT = replace(CONTROLNET_FIT, target_views=3, lr=2e-4, warmup_steps=50)
"""Fine-tuning lesson 07's ControlNet on groups: 8 objects x (1-2 clean + 3 noisy views), a lower peak rate."""
ORBIT_MODES = ("chunked", "autoregressive")
CAMERA_FILE = f"camera_embedding.{WEIGHTS_VARIANT}.safetensors"
"""Where a camera-aware multi-view ControlNet's folder keeps its :class:`CameraEmbedding` (beside diffusers' files)."""


class ViewGroups:
    """How many consecutive samples of a batch are views of one object (1: every sample on its own), and their rays.

    One instance is shared by all the :class:`CrossViewAttnProcessor` of a model; :class:`MultiViewUNet` sets
    ``views`` and ``rays`` (``[B, 6, H, W]`` or None) for the length of each call. While ``recorded`` is a list,
    every attention call appends its ``(attention module, input hidden states, views, camera position or None)``
    to it (:func:`recording`, for :func:`attention_weights`).
    """

    def __init__(self):
        self.views = 1
        self.rays: Tensor | None = None
        self.recorded: list | None = None


def relative_rays(K: Tensor, c2w: Tensor, height: int, width: int) -> Tensor:
    """The Pluecker rays of every view of each group, in the frame of the group's first camera:
    ``pluecker(K_v, c2w_0^{-1} c2w_v)`` (:func:`genvs.cameras.pluecker_rays`). They do not change when the whole
    group moves (the world frame is arbitrary); the first view's moments are zero (its rays pass its own centre).

    Args:
        K: ``[objects, V, 3, 3]``; c2w: ``[objects, V, 4, 4]``; height, width: the images' size.
    Returns:
        ``[objects * V, 6, H, W]``, object-major (the layout of :class:`MultiViewUNet`'s batch).
    """
    relative = torch.linalg.inv(c2w[:, :1]) @ c2w
    return pluecker_rays(K, relative, height, width).flatten(0, 1)


class CameraEmbedding(nn.Module):
    """One zero-initialised 1x1 convolution per cross-view attention layer, ``P_l: 6 -> C_l`` (module docstring):
    the view's rays, area-averaged to the layer's resolution, become a camera position added to the tokens that
    make queries and keys. Zero-initialised, it changes nothing until trained.

    Args:
        channels: attention layer name (``"base.<module path>"`` or ``"controlnet.<module path>"``) -> its channels.
    """

    def __init__(self, channels: dict[str, int]):
        super().__init__()
        self.layers = nn.ModuleDict({name.replace(".", "-"): nn.Conv2d(6, width, 1)
                                     for name, width in channels.items()})
        for layer in self.layers.values():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def for_networks(cls, base, controlnet) -> CameraEmbedding:
        """One layer for every attention module of ``base`` and ``controlnet`` (diffusers models)."""
        return cls({f"{prefix}.{path}": module.to_q.in_features
                    for prefix, network in (("base", base), ("controlnet", controlnet))
                    for path, module in network.named_modules() if path + ".processor" in network.attn_processors})

    @classmethod
    def from_file(cls, path: str | Path) -> CameraEmbedding:
        """The embedding saved (by :class:`MultiViewControlNet`) in the safetensors file ``path``, float32."""
        state = {name: tensor.float() for name, tensor in load_file(path).items()}
        embedding = cls({name.removeprefix("layers.").removesuffix(".weight").replace("-", "."): tensor.shape[0]
                         for name, tensor in state.items() if name.endswith(".weight")})
        embedding.load_state_dict(state)
        return embedding

    def layer(self, name: str) -> nn.Conv2d:
        """The convolution of attention layer ``name`` (as in ``channels``)."""
        return self.layers[name.replace(".", "-")]


def attention_heads(attn, hidden_states: Tensor, views: int,
                    position: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[objects, heads, V * H * W, d]`` of ``hidden_states [objects * V, C, H, W]`` for
    the diffusers ``Attention`` module ``attn`` (group norm, then its projections), the views of an object joined;
    ``position [objects * V, C, H, W]`` (a :class:`CameraEmbedding`'s) is added before the query and key
    projections only."""
    batch, channels, height, width = hidden_states.shape
    if batch % views:
        raise ValueError(f"a batch of {batch} samples is not whole groups of {views} views")

    def tokens(maps: Tensor) -> Tensor:  # [B, C, H, W] -> [B, H * W, C]
        return maps.reshape(batch, channels, height * width).transpose(1, 2)

    hidden = tokens(hidden_states)
    if attn.group_norm is not None:
        hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
    placed = hidden if position is None else hidden + tokens(position)

    def by_object(projected: Tensor) -> Tensor:  # [B, tokens, heads * d] -> [objects, heads, V * tokens, d]
        return projected.reshape(batch // views, views * height * width, attn.heads, -1).transpose(1, 2)

    return by_object(attn.to_q(placed)), by_object(attn.to_k(placed)), by_object(attn.to_v(hidden))


class CrossViewAttnProcessor:
    """A diffusers attention processor for self-attention across the views of one object (module docstring).

    Same arithmetic as ``diffusers.models.attention_processor.AttnProcessor2_0`` (group norm, q/k/v projections,
    ``scaled_dot_product_attention``, output projection, residual, rescale), except that the keys and values of
    the ``groups.views`` consecutive samples of one object are concatenated: hidden states ``[B, C, H, W]`` with
    ``B = objects * V`` give queries ``[objects, heads, V*H*W, d]`` against keys of the same shape. With a
    ``camera`` (a :class:`CameraEmbedding` layer) and rays set on ``groups``, queries and keys carry each view's
    camera.
    """

    def __init__(self, groups: ViewGroups, camera: nn.Conv2d | None = None):
        self.groups, self.camera = groups, camera

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None \
                or attn.norm_q is not None or hidden_states.dim() != 4:
            raise ValueError("CrossViewAttnProcessor handles plain 2D self-attention only (no text, mask or norms)")
        views, rays = self.groups.views, self.groups.rays
        batch, channels, height, width = hidden_states.shape
        position = None
        if self.camera is not None and rays is not None:
            position = self.camera(F.adaptive_avg_pool2d(rays.to(hidden_states), (height, width)))
        if self.groups.recorded is not None:
            self.groups.recorded.append((attn, hidden_states.detach(),
                                         views, None if position is None else position.detach()))
        attended = F.scaled_dot_product_attention(*attention_heads(attn, hidden_states, views, position))
        hidden = attended.transpose(1, 2).reshape(batch, height * width, -1)
        hidden = attn.to_out[1](attn.to_out[0](hidden))
        hidden = hidden.transpose(1, 2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden = hidden + hidden_states
        return hidden / attn.rescale_output_factor


@torch.no_grad()
def attention_weights(attn, hidden_states: Tensor, views: int, position: Tensor | None = None) -> Tensor:
    """The attention probabilities ``softmax(q k^T / sqrt(d))`` of one cross-view attention call,
    ``[objects, heads, V * H * W (queries), V * H * W (keys)]``, from what :func:`recording` kept."""
    query, key, _ = attention_heads(attn, hidden_states, views, position)
    return (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(-1)


@contextlib.contextmanager
def recording(denoiser: k_diffusion.layers.Denoiser) -> Iterator[list]:
    """Within the block, every cross-view attention call of ``denoiser`` (a :func:`multiview_denoiser`) appends
    ``(attention module, hidden states, views, camera position or None)`` to the yielded list, in call order
    (ControlNet first, then the base's down, mid and up blocks): ``attention_weights(*call)``."""
    groups = denoiser.inner_model.groups
    groups.recorded = []
    try:
        yield groups.recorded
    finally:
        groups.recorded = None


class MultiViewUNet(EDMUNet):
    """:class:`genvs.controlnet.EDMUNet` whose self-attention (base and ControlNet) spans the views of an object.

    Installs a :class:`CrossViewAttnProcessor` on every attention layer of ``base`` and ``controlnet`` (in place),
    with its layer of ``cameras`` (a :class:`CameraEmbedding`) when given. Called as
    ``F(x, sigma, unet_cond, class_labels=None, views=V, rays=None)``: the batch is ``objects * V`` samples,
    object-major (``[objects, V, ...]`` flattened); ``rays [objects * V, 6, H, W]`` (:func:`relative_rays`) are
    used by ``cameras`` only (a camera-blind network ignores them); ``views=1`` without cameras is lesson 07's
    per-view model exactly.
    """

    def __init__(self, base, controlnet, cameras: CameraEmbedding | None = None):
        super().__init__(base, controlnet)
        self.groups, self.cameras = ViewGroups(), cameras
        for prefix, network in (("base", base), ("controlnet", controlnet)):
            network.set_attn_processor({
                name: CrossViewAttnProcessor(self.groups, None if cameras is None else
                                             cameras.layer(f"{prefix}.{name.removesuffix('.processor')}"))
                for name in network.attn_processors})

    def forward(self, x: Tensor, sigma: Tensor, unet_cond: Tensor | None = None, class_labels: Tensor | None = None,
                views: int = 1, rays: Tensor | None = None) -> Tensor:
        """``x [objects * V, 3, H, W]``, ``sigma [objects * V]``, ``unet_cond [objects * V, C, H, W]``,
        ``rays [objects * V, 6, H, W]`` -> ``F``."""
        self.groups.views, self.groups.rays = views, rays if self.cameras is not None else None
        try:
            return super().forward(x, sigma, unet_cond, class_labels)
        finally:
            self.groups.views, self.groups.rays = 1, None


class MultiViewControlNet(nn.Module):
    """What multi-view training trains: the ControlNet and, for a camera-aware route, its :class:`CameraEmbedding`.

    ``save_pretrained`` writes the ControlNet's diffusers files and, with cameras, :data:`CAMERA_FILE` beside them.
    """

    def __init__(self, controlnet, cameras: CameraEmbedding | None = None):
        super().__init__()
        self.controlnet, self.cameras = controlnet, cameras

    def save_pretrained(self, out: str | Path, **diffusers_options) -> None:
        self.controlnet.save_pretrained(out, **diffusers_options)
        if self.cameras is not None:
            save_file({name: tensor.contiguous() for name, tensor in self.cameras.state_dict().items()},
                      Path(out) / CAMERA_FILE)


def multiview_denoiser(base, controlnet, sigma_data: float = 0.5,
                       cameras: CameraEmbedding | None = None) -> k_diffusion.layers.Denoiser:
    """``D(x, sigma, unet_cond=c, views=V, rays=r)``: EDM's preconditioning (``k_diffusion.layers.Denoiser``) around
    :class:`MultiViewUNet` (which installs the cross-view processors on ``base`` and ``controlnet``, with
    ``cameras``' layers when given)."""
    return k_diffusion.layers.Denoiser(MultiViewUNet(base, controlnet, cameras), sigma_data=sigma_data)


def group_loss(model, denoiser: k_diffusion.layers.Denoiser, batch: dict, fit: FitConfig, generator: torch.Generator,
               joint: bool = True) -> Tensor:
    """The EDM loss of groups of views (module docstring), per object ``[objects]``.

    ``batch``: a :class:`genvs.data.batches.StepBatches` item, ``images [objects, V, 3, H, W]``, ``K``, ``c2w`` and
    ``n_inputs``: its first ``n_inputs`` views are the clean ones; they build GeNVS ``model``'s field, from which
    every view of the group is rendered (dropped to the null render with probability ``fit.cond_dropout`` per
    view) and enter as themselves at :data:`CLEAN_SIGMA`; the others get one ``sigma`` per object
    (``ln sigma ~ N(noise_mean, noise_std^2)``). Draws from ``generator``: ``sigma``, the noise, the dropout::

        L_object = mean_{noisy views v} lambda(sigma) |D(y_v + sigma n_v; sigma, c_v | group) - y_v|^2

    ``joint=False`` scores the same draws with per-view attention (every view alone; without cameras, lesson 07's
    model). A camera-aware ``denoiser`` gets the group's :func:`relative_rays` either way.
    """
    n_clean = int(batch["n_inputs"])
    images, intrinsics, c2w = batch["images"], batch["K"], batch["c2w"]
    (n_objects, views), device = images.shape[:2], images.device
    with torch.no_grad():
        field = model.field.encode(images[:, :n_clean], intrinsics[:, :n_clean], c2w[:, :n_clean])
        cond, _ = model.condition(field, intrinsics, c2w)
    sigma = sample_training_sigmas(n_objects, fit.noise_mean, fit.noise_std, generator, device)
    noise = draw(torch.randn, tuple(images.shape), generator, device)
    cond = drop_condition(cond, fit.cond_dropout, generator)
    clean = torch.arange(views, device=device) < n_clean  # [V]
    sigma_views = torch.where(clean, CLEAN_SIGMA, sigma[:, None])  # [objects, V]
    noise = noise * (~clean)[None, :, None, None, None]
    rays = relative_rays(intrinsics, c2w, *images.shape[-2:])
    losses = denoiser.loss(images.flatten(0, 1), noise.flatten(0, 1), sigma_views.flatten(), unet_cond=cond,
                           views=views if joint else 1, rays=rays)
    return losses.view(n_objects, views)[:, n_clean:].mean(1)


def train_multiview(model, data: str | Path, out: str | Path, steps: int, base, controlnet,
                    fit: FitConfig = MULTIVIEW_FIT, max_clean: int = 2, device: torch.device | str = "cpu",
                    save_every: int = 200, progress: bool = True, resume: bool = False, until: int | None = None,
                    cameras: bool = False):
    """Fine-tune a copy of ``controlnet`` to denoise groups of views jointly (:func:`group_loss`, averaged over the
    objects); the base and GeNVS ``model``'s field stay frozen. ``cameras``: also train a :class:`CameraEmbedding`
    (zero-initialised, so step 0 is the camera-blind route), a camera-aware route.

    Each step: ``fit.batch_size`` training objects, each a group of ``n_clean + fit.target_views`` distinct views,
    ``n_clean`` drawn in ``1 .. max_clean`` per step. Writes the EMA weights to ``out`` (a diffusers folder, fp16,
    and :data:`CAMERA_FILE` with cameras) with ``log.csv`` and ``training.json``; ``resume`` and ``until`` are
    :func:`genvs.controlnet.fit_network`'s. Returns the trained route (:func:`multiview_route` of ``out`` on
    ``base``, on ``device``) and the run's record.
    """
    device = torch.device(device)
    model = model.to(device).eval().requires_grad_(False)
    base = copy.deepcopy(base).to(device).eval().requires_grad_(False)
    controlnet = copy.deepcopy(controlnet).to(device).requires_grad_(True)
    embedding = CameraEmbedding.for_networks(base, controlnet).to(device) if cameras else None
    dataset = SRNDataset(data, split="train", views_per_item=None, image_size=base.config.sample_size)
    batches = StepBatches(dataset, fit.batch_size, max_clean, fit.target_views, fit.seed)
    denoiser = multiview_denoiser(base, controlnet, cameras=embedding)

    def loss_of(batch: dict, generator: torch.Generator) -> Tensor:
        return group_loss(model, denoiser, batch, fit, generator).mean()

    record = fit_network(MultiViewControlNet(controlnet, embedding), loss_of, batches, steps, fit, Path(out), device,
                         save_every, progress, resume=resume, until=until)
    trained, trained_cameras = load_multiview(out, device)
    return multiview_denoiser(copy.deepcopy(base), trained, cameras=trained_cameras).eval(), record


def load_multiview(path: str | Path | None = None,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, CameraEmbedding | None]:
    """The multi-view ControlNet in the diffusers folder ``path`` (default: the shipped one) and, if the folder
    has :data:`CAMERA_FILE`, its camera embedding (float32, on ``device``, eval mode); else None."""
    controlnet = load_controlnet(path, device, "multiview")
    folder = shipped_path("multiview") if path is None else Path(path)
    if not (folder / CAMERA_FILE).is_file():
        return controlnet, None
    return controlnet, CameraEmbedding.from_file(folder / CAMERA_FILE).to(device).eval()


def multiview_route(base: str | Path | None = None, controlnet: str | Path | None = None,
                    device: torch.device | str = "cpu") -> k_diffusion.layers.Denoiser:
    """The shipped (or given) base and multi-view ControlNet (:func:`load_multiview`: with its camera embedding, if
    it has one) as ``D(x, sigma, unet_cond=c, views=V, rays=r)``, eval mode."""
    network, cameras = load_multiview(controlnet, device)
    return multiview_denoiser(load_base(base, device), network, cameras=cameras).eval()


@torch.no_grad()
def sample_jointly(denoiser: k_diffusion.layers.Denoiser, cond: Tensor, clean: Tensor, guides: Tensor, *,
                   rays: Tensor | None = None, steps: int = 25, churn: float = 0.0, s_noise: float = 1.0,
                   guidance_scale: float = GUIDANCE_SCALE, sigma_min: float = 0.002, sigma_max: float = 80.0,
                   rho: float = 7.0,
                   seed: int | Sequence[int] = 0) -> Tensor:
    """Sample the new views of ``B`` groups jointly (module docstring), with EDM's Euler sampler and churn.

    Args:
        denoiser: a :func:`multiview_denoiser` (run in eval mode, given back in its modes).
        cond: ``[B, V, C, H, W]`` the renders of every view of each group, in group order: clean, guides, new.
        clean: ``[B, n_clean, 3, H, W]`` clean conditioning views (>= 1); guides: ``[B, n_guides, 3, H, W]``
            earlier generated views (``n_guides`` may be 0), re-noised to the current level at every step.
        rays: ``[B, V, 6, H, W]`` every view's :func:`relative_rays`, in group order (for a camera-aware denoiser;
            a camera-blind one ignores them).
        steps, churn, s_noise, sigma_min, sigma_max, rho: as :func:`genvs.sampling.sample_images` (``churn``: EDM's
            per-step gamma, ``sigma_hat = (1 + churn) sigma_i``, 0 to sqrt(2) - 1).
        guidance_scale: classifier-free guidance ``w``: ``D_w = D(null) + w (D(c) - D(null))``, the null render
            for every view of the group in the unconditional half (the clean views' pixels stay).
        seed: one int per group (or one int for all): group ``b``'s start noise, churn and guide noise come from
            ``seed[b]`` alone.
    Returns:
        the new views ``[B, V - n_clean - n_guides, 3, H, W]``, clamped to [-1, 1].
    """
    n_groups, views, _, height, width = cond.shape
    n_clean, n_guides = clean.shape[1], guides.shape[1]
    n_new = views - n_clean - n_guides
    if n_clean < 1 or n_new < 1:
        raise ValueError(f"a group of {views} views with {n_clean} clean and {n_guides} guides: need >= 1 clean "
                         f"view and >= 1 new view")
    device = cond.device
    seeds = [seed] * n_groups if isinstance(seed, int) else list(seed)
    draw_noise = seeded_noise(seeds, n_groups, device)  # per-group streams over [B, n * 3, H, W]
    # genvs.sampling's guidance on whole groups: its two halves are [groups | groups], each group kept together
    flat_rays = None if rays is None else rays.flatten(0, 1)

    def rays_for(x: Tensor) -> Tensor | None:  # guidance's batch is [groups | groups]: the rays once per half
        return None if flat_rays is None else flat_rays.repeat(x.shape[0] // flat_rays.shape[0], 1, 1, 1)

    joint = guided(lambda x, sigma, unet_cond: denoiser(x, sigma, unet_cond=unet_cond, views=views, rays=rays_for(x)),
                   cond.flatten(0, 1), guidance_scale)

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:  # x [B, n_new * 3, H, W], sigma [B]
        noisy_guides = guides + sigma.view(-1, 1, 1, 1, 1) * draw_noise(
            (n_groups, n_guides * 3, height, width)).view_as(guides)
        group = torch.cat([clean, noisy_guides, x.view(n_groups, n_new, 3, height, width)], 1)
        sigmas = torch.cat([torch.full((n_groups, n_clean), CLEAN_SIGMA, device=device),
                            sigma[:, None].expand(n_groups, views - n_clean)], 1)
        out = joint(group.flatten(0, 1), sigmas.flatten()).view(n_groups, views, 3, height, width)
        return out[:, n_clean + n_guides:].flatten(1, 2)

    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, device)
    with k_diffusion.utils.eval_mode(denoiser):
        x = draw_noise((n_groups, n_new * 3, height, width)) * sigmas[0]
        x = sample_karras(denoise, x, sigmas, draw_noise, churn=churn, s_noise=s_noise)
    return x.clamp(-1.0, 1.0).view(n_groups, n_new, 3, height, width)


def orbit_plan(n_frames: int, mode: str, chunk: int, max_random: int,
               generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
    """``(new frames, guide frames)`` of each sampling call along an orbit of ``n_frames``.

    ``"chunked"``: frames in chunks of ``chunk``, each guided by the previous chunk. ``"autoregressive"``: one
    frame at a time, guided by up to ``max_random`` random earlier frames and the previous one
    (:func:`genvs.sampling.conditioning_set` without the input view, which is always in the group).
    """
    if mode == "chunked":
        starts = range(0, n_frames, chunk)
        return [(list(range(start, min(start + chunk, n_frames))), list(range(max(start - chunk, 0), start)))
                for start in starts]
    if mode == "autoregressive":
        return [([frame], [index - 1 for index in conditioning_set(frame, 1, max_random, generator)[1:]])
                for frame in range(n_frames)]
    raise ValueError(f"unknown orbit mode {mode!r}; valid modes: {ORBIT_MODES}")


@torch.no_grad()
def generate_orbit(model, denoiser: k_diffusion.layers.Denoiser, images: Tensor, K_in: Tensor, c2w: Tensor,
                   target_K: Tensor, target_c2w: Tensor, *, mode: str = "chunked", chunk: int = 3,
                   max_random: int = 2, seed: int | Sequence[int] = 0, progress: bool = True, **options) -> dict:
    """Generate ``B`` objects' trajectories with the multi-view route, chunked or autoregressive (module docstring).

    Every view's condition is rendered from the field of the real input views (one field, whatever was generated
    before: the guides carry the earlier frames); every group's cameras go with it (:func:`relative_rays`, relative
    to the first input view). Call ``c`` (:func:`orbit_plan`) samples its new frames with
    :func:`sample_jointly`, the input views clean, its guide frames as guides, seeded ``derive_seed(s_b, c)``.
    The autoregressive plan (which earlier frames guide which frame) is one for the whole batch, so that all groups
    have the same size: drawn from a generator seeded with the first object's seed ``s_0``.

    Args:
        model: the :class:`genvs.model.GeNVS` whose field renders the conditions (eval mode, given back).
        denoiser: a :func:`multiview_denoiser`.
        images: ``[B, V_in, 3, H, W]`` input views; K_in ``[B, V_in, 3, 3]``; c2w ``[B, V_in, 4, 4]``.
        target_K: ``[B, N, 3, 3]``; target_c2w: ``[B, N, 4, 4]``.
        mode: one of :data:`ORBIT_MODES`; chunk: frames per call (chunked); max_random: random earlier frames
            among the guides (autoregressive).
        seed: one int (object ``b`` gets ``derive_seed(seed, b)``), or one int per object.
        options: :func:`sample_jointly`'s sampler options (steps, churn, s_noise, guidance_scale, ...).
    Returns:
        ``samples [B, N, 3, H, W]`` and ``guides``: per call, the guide frame indices.
    """
    device = next(denoiser.parameters()).device
    (n_objects, n_inputs), n_frames = images.shape[:2], target_c2w.shape[1]
    seeds = [derive_seed(seed, index) for index in range(n_objects)] if isinstance(seed, int) else list(seed)
    plan = orbit_plan(n_frames, mode, chunk, max_random, torch.Generator().manual_seed(seeds[0]))
    images, target_K, target_c2w = images.to(device), target_K.to(device), target_c2w.to(device)
    with k_diffusion.utils.eval_mode(model):
        field = model.field.encode(images, K_in.to(device), c2w.to(device))
        all_K, all_c2w = torch.cat([K_in.to(device), target_K], 1), torch.cat([c2w.to(device), target_c2w], 1)
        cond = model.condition(field, all_K, all_c2w)[0].unflatten(0, (n_objects, n_inputs + n_frames))
    samples = images.new_zeros(n_objects, n_frames, *images.shape[2:])
    for call, (new, guides) in enumerate(tqdm(plan, desc=f"generating ({mode})", disable=not progress)):
        group = list(range(n_inputs)) + [n_inputs + frame for frame in guides + new]
        rays = relative_rays(all_K[:, group], all_c2w[:, group], *images.shape[-2:]).unflatten(0, (n_objects, -1))
        samples[:, new] = sample_jointly(denoiser, cond[:, group], images, samples[:, guides], rays=rays,
                                         seed=[derive_seed(object_seed, call) for object_seed in seeds], **options)
    return {"samples": samples.cpu(), "guides": [guides for _, guides in plan]}
