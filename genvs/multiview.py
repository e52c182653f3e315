"""Multi-view joint denoising (lesson 08): several views of one object denoised together, attending to each other.

Lesson 07's route denoises each view alone, so two views of one object agree only as far as the field's renders
make them. Here the self-attention layers of the base U-Net and of the ControlNet attend across the views of one
object (MVDream, Viewset Diffusion, SyncDreamer; Text2Video-Zero's cross-frame attention): a batch holds ``V``
consecutive views per object, and every token of a view attends over the tokens of all ``V`` views::

    q, k, v: [objects * V, tokens, C]  ->  [objects, V * tokens, C]      softmax(q k^T / sqrt(d)) v      -> back

Views of different objects never meet (:class:`CrossViewAttnProcessor`); with ``V = 1`` it is diffusers' own
attention exactly.

**Training** (:func:`train_multiview`, the seed reimplementation's recipe): groups of views of one object, the first
1 to ``max_clean`` of them *clean* conditioning views (they also build the feature field; they enter as themselves
at the low noise level :data:`CLEAN_SIGMA` and carry no loss), the rest noisy with **one noise level per object**
shared by its noisy views; per-view conditioning dropout. The base stays frozen; the ControlNet, started from
lesson 07's, learns to use the other views.

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
from torch import Tensor
from tqdm.auto import tqdm

from genvs.controlnet import CONTROLNET_FIT, GUIDANCE_SCALE, EDMUNet, FitConfig, fit_network, load_base, load_controlnet
from genvs.data.batches import StepBatches
from genvs.data.srn import SRNDataset
from genvs.denoiser import drop_condition, k_diffusion, sample_training_sigmas
from genvs.sampling import conditioning_set, guided, karras_sigmas, sample_karras, seeded_noise
from genvs.seeding import derive_seed, draw

__all__ = ["ViewGroups", "attention_heads", "CrossViewAttnProcessor", "attention_weights", "recording", "MultiViewUNet",
           "multiview_denoiser", "CLEAN_SIGMA", "MULTIVIEW_FIT", "group_loss", "train_multiview",
           "multiview_route", "sample_jointly", "ORBIT_MODES", "orbit_plan", "generate_orbit"]

CLEAN_SIGMA = 0.05
"""The noise level a clean conditioning view is given (it enters unnoised): low, yet one the base and the ControlNet
saw in training (``ln 0.05 = -3.0``, 1.5 standard deviations below the base's mean log-sigma)."""
MULTIVIEW_FIT = replace(CONTROLNET_FIT, target_views=3, lr=2e-4, warmup_steps=50)
"""Fine-tuning lesson 07's ControlNet on groups: 8 objects x (1-2 clean + 3 noisy views), a lower peak rate."""
ORBIT_MODES = ("chunked", "autoregressive")


class ViewGroups:
    """How many consecutive samples of a batch are views of one object (1: every sample on its own).

    One instance is shared by all the :class:`CrossViewAttnProcessor` of a model; :class:`MultiViewUNet` sets it
    for the length of each call. While ``recorded`` is a list, every attention call appends its
    ``(attention module, input hidden states, views)`` to it (:func:`recording`, for :func:`attention_weights`).
    """

    def __init__(self):
        self.views = 1
        self.recorded: list | None = None


def attention_heads(attn, hidden_states: Tensor, views: int) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[objects, heads, V * H * W, d]`` of ``hidden_states [objects * V, C, H, W]`` for
    the diffusers ``Attention`` module ``attn`` (group norm, then its projections), the views of an object joined."""
    batch, channels, height, width = hidden_states.shape
    if batch % views:
        raise ValueError(f"a batch of {batch} samples is not whole groups of {views} views")
    hidden = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)

    def by_object(projected: Tensor) -> Tensor:  # [B, tokens, heads * d] -> [objects, heads, V * tokens, d]
        return projected.reshape(batch // views, views * height * width, attn.heads, -1).transpose(1, 2)

    return by_object(attn.to_q(hidden)), by_object(attn.to_k(hidden)), by_object(attn.to_v(hidden))


class CrossViewAttnProcessor:
    """A diffusers attention processor for self-attention across the views of one object (module docstring).

    Same arithmetic as ``diffusers.models.attention_processor.AttnProcessor2_0`` (group norm, q/k/v projections,
    ``scaled_dot_product_attention``, output projection, residual, rescale), except that the keys and values of
    the ``groups.views`` consecutive samples of one object are concatenated: hidden states ``[B, C, H, W]`` with
    ``B = objects * V`` give queries ``[objects, heads, V*H*W, d]`` against keys of the same shape.
    """

    def __init__(self, groups: ViewGroups):
        self.groups = groups

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None \
                or attn.norm_q is not None or hidden_states.dim() != 4:
            raise ValueError("CrossViewAttnProcessor handles plain 2D self-attention only (no text, mask or norms)")
        views = self.groups.views
        if self.groups.recorded is not None:
            self.groups.recorded.append((attn, hidden_states.detach(), views))
        batch, channels, height, width = hidden_states.shape
        attended = F.scaled_dot_product_attention(*attention_heads(attn, hidden_states, views))
        hidden = attended.transpose(1, 2).reshape(batch, height * width, -1)
        hidden = attn.to_out[1](attn.to_out[0](hidden))
        hidden = hidden.transpose(1, 2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden = hidden + hidden_states
        return hidden / attn.rescale_output_factor


@torch.no_grad()
def attention_weights(attn, hidden_states: Tensor, views: int) -> Tensor:
    """The attention probabilities ``softmax(q k^T / sqrt(d))`` of one cross-view attention call,
    ``[objects, heads, V * H * W (queries), V * H * W (keys)]``, from what :func:`recording` kept."""
    query, key, _ = attention_heads(attn, hidden_states, views)
    return (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(-1)


@contextlib.contextmanager
def recording(denoiser: k_diffusion.layers.Denoiser) -> Iterator[list]:
    """Within the block, every cross-view attention call of ``denoiser`` (a :func:`multiview_denoiser`) appends
    ``(attention module, hidden states, views)`` to the yielded list, in call order (ControlNet first, then the
    base's down, mid and up blocks)."""
    groups = denoiser.inner_model.groups
    groups.recorded = []
    try:
        yield groups.recorded
    finally:
        groups.recorded = None


class MultiViewUNet(EDMUNet):
    """:class:`genvs.controlnet.EDMUNet` whose self-attention (base and ControlNet) spans the views of an object.

    Installs one :class:`CrossViewAttnProcessor` on ``base`` and ``controlnet`` (in place). Called as
    ``F(x, sigma, unet_cond, class_labels=None, views=V)``: the batch is ``objects * V`` samples, object-major
    (``[objects, V, ...]`` flattened); ``views=1`` is lesson 07's per-view model exactly.
    """

    def __init__(self, base, controlnet):
        super().__init__(base, controlnet)
        self.groups = ViewGroups()
        processor = CrossViewAttnProcessor(self.groups)
        base.set_attn_processor(processor)
        controlnet.set_attn_processor(processor)

    def forward(self, x: Tensor, sigma: Tensor, unet_cond: Tensor | None = None, class_labels: Tensor | None = None,
                views: int = 1) -> Tensor:
        """``x [objects * V, 3, H, W]``, ``sigma [objects * V]``, ``unet_cond [objects * V, C, H, W]`` -> ``F``."""
        self.groups.views = views
        try:
            return super().forward(x, sigma, unet_cond, class_labels)
        finally:
            self.groups.views = 1


def multiview_denoiser(base, controlnet, sigma_data: float = 0.5) -> k_diffusion.layers.Denoiser:
    """``D(x, sigma, unet_cond=c, views=V)``: EDM's preconditioning (``k_diffusion.layers.Denoiser``) around
    :class:`MultiViewUNet` (which installs the cross-view processors on ``base`` and ``controlnet``)."""
    return k_diffusion.layers.Denoiser(MultiViewUNet(base, controlnet), sigma_data=sigma_data)


def group_loss(model, denoiser: k_diffusion.layers.Denoiser, batch: dict, fit: FitConfig, generator: torch.Generator,
               joint: bool = True) -> Tensor:
    """The EDM loss of groups of views (module docstring), per object ``[objects]``.

    ``batch``: a :class:`genvs.data.batches.StepBatches` item, ``images [objects, V, 3, H, W]``, ``K``, ``c2w`` and
    ``n_inputs``: its first ``n_inputs`` views are the clean ones; they build GeNVS ``model``'s field, from which
    every view of the group is rendered (dropped to the null render with probability ``fit.cond_dropout`` per
    view) and enter as themselves at :data:`CLEAN_SIGMA`; the others get one ``sigma`` per object
    (``ln sigma ~ N(noise_mean, noise_std^2)``). Draws from ``generator``: ``sigma``, the noise, the dropout::

        L_object = mean_{noisy views v} lambda(sigma) |D(y_v + sigma n_v; sigma, c_v | group) - y_v|^2

    ``joint=False`` scores the same draws with per-view attention (every view alone, lesson 07's model).
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
    losses = denoiser.loss(images.flatten(0, 1), noise.flatten(0, 1), sigma_views.flatten(), unet_cond=cond,
                           views=views if joint else 1)
    return losses.view(n_objects, views)[:, n_clean:].mean(1)


def train_multiview(model, data: str | Path, out: str | Path, steps: int, base, controlnet,
                    fit: FitConfig = MULTIVIEW_FIT, max_clean: int = 2, device: torch.device | str = "cpu",
                    save_every: int = 200, progress: bool = True, resume: bool = False, until: int | None = None):
    """Fine-tune a copy of ``controlnet`` to denoise groups of views jointly (:func:`group_loss`, averaged over the
    objects); the base and GeNVS ``model``'s field stay frozen.

    Each step: ``fit.batch_size`` training objects, each a group of ``n_clean + fit.target_views`` distinct views,
    ``n_clean`` drawn in ``1 .. max_clean`` per step. Writes the ControlNet's EMA weights to ``out`` (a diffusers
    folder, fp16) with ``log.csv`` and ``training.json``; ``resume`` and ``until`` are
    :func:`genvs.controlnet.fit_network`'s. Returns the EMA ControlNet (float32, on ``device``) and the run's record.
    """
    device = torch.device(device)
    model = model.to(device).eval().requires_grad_(False)
    base = copy.deepcopy(base).to(device).eval().requires_grad_(False)
    controlnet = copy.deepcopy(controlnet).to(device).requires_grad_(True)
    dataset = SRNDataset(data, split="train", views_per_item=None, image_size=base.config.sample_size)
    batches = StepBatches(dataset, fit.batch_size, max_clean, fit.target_views, fit.seed)
    denoiser = multiview_denoiser(base, controlnet)

    def loss_of(batch: dict, generator: torch.Generator) -> Tensor:
        return group_loss(model, denoiser, batch, fit, generator).mean()

    record = fit_network(controlnet, loss_of, batches, steps, fit, Path(out), device, save_every, progress,
                         resume=resume, until=until)
    return load_controlnet(out, device), record


def multiview_route(base: str | Path | None = None, controlnet: str | Path | None = None,
                    device: torch.device | str = "cpu") -> k_diffusion.layers.Denoiser:
    """The shipped (or given) base and multi-view ControlNet as ``D(x, sigma, unet_cond=c, views=V)``, eval mode."""
    return multiview_denoiser(load_base(base, device), load_controlnet(controlnet, device, "multiview")).eval()


@torch.no_grad()
def sample_jointly(denoiser: k_diffusion.layers.Denoiser, cond: Tensor, clean: Tensor, guides: Tensor, *,
                   steps: int = 25, churn: float = 0.0, s_noise: float = 1.0, guidance_scale: float = GUIDANCE_SCALE,
                   sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                   seed: int | Sequence[int] = 0) -> Tensor:
    """Sample the new views of ``B`` groups jointly (module docstring), with EDM's Euler sampler and churn.

    Args:
        denoiser: a :func:`multiview_denoiser` (run in eval mode, given back in its modes).
        cond: ``[B, V, C, H, W]`` the renders of every view of each group, in group order: clean, guides, new.
        clean: ``[B, n_clean, 3, H, W]`` clean conditioning views (>= 1); guides: ``[B, n_guides, 3, H, W]``
            earlier generated views (``n_guides`` may be 0), re-noised to the current level at every step.
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
    joint = guided(lambda x, sigma, unet_cond: denoiser(x, sigma, unet_cond=unet_cond, views=views),
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
    before: the guides carry the earlier frames). Call ``c`` (:func:`orbit_plan`) samples its new frames with
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
        samples[:, new] = sample_jointly(denoiser, cond[:, group], images, samples[:, guides],
                                         seed=[derive_seed(object_seed, call) for object_seed in seeds], **options)
    return {"samples": samples.cpu(), "guides": [guides for _, guides in plan]}
