import dataclasses
import json

import pytest
import torch

from genvs.controlnet import (
    CONTROLNET_FIT,
    TIMESTEP_SCALE,
    base_config,
    build_base,
    build_controlnet,
    edm_denoiser,
    load_base,
    load_controlnet,
    save_pretrained,
    train_base,
    train_controlnet,
)
from genvs.data.synthetic import make_dataset
from genvs.denoiser import null_condition
from genvs.model import GeNVS, genvs_config
from genvs.sampling import sample_images

SIZE = 32


@pytest.fixture(scope="module")
def base():
    return build_base(base_config("smoke"), seed=0).eval()


def trained_looking(controlnet, seed=1):
    """``controlnet`` with its zero-initialised parts (output convolutions, class embedding) made random in place,
    as after training, so that the render and the class can change its output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out",
                                "class_embedding")):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return controlnet.eval()


def inputs(batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, SIZE, SIZE, generator=generator)
    sigma = torch.tensor([0.05, 1.0, 20.0])[:batch]
    render = torch.randn(batch, 16, SIZE, SIZE, generator=generator)
    return x, sigma, render


@torch.no_grad()
def test_a_new_controlnet_copies_the_base_and_leaves_its_prediction_unchanged(base):
    controlnet = build_controlnet(base)
    for name, tensor in base.down_blocks.state_dict().items():
        assert torch.equal(controlnet.down_blocks.state_dict()[name], tensor)
    x, sigma, render = inputs()
    alone = edm_denoiser(base)(x, sigma)
    with_controlnet = edm_denoiser(base, controlnet)
    assert torch.equal(with_controlnet(x, sigma, unet_cond=render), alone)
    assert torch.equal(with_controlnet(x, sigma, unet_cond=null_condition(render)), alone)
    # trained (non-zero output convolutions), the render does change the prediction: the check above can fail
    assert not torch.allclose(edm_denoiser(base, trained_looking(controlnet))(x, sigma, unet_cond=render), alone)


def test_a_controlnet_is_built_from_its_seed_alone(base):
    torch.manual_seed(123)  # the global RNG's state must not matter
    first = build_controlnet(base, seed=0)
    torch.manual_seed(456)
    again, other = build_controlnet(base, seed=0), build_controlnet(base, seed=1)
    state = first.state_dict()
    assert all(torch.equal(tensor, state[name]) for name, tensor in again.state_dict().items())
    assert not torch.equal(other.controlnet_cond_embedding.conv_in.weight,
                           first.controlnet_cond_embedding.conv_in.weight)


@torch.no_grad()
def test_the_wrapper_is_edm_preconditioning_around_diffusers_prediction(base):
    # D = c_skip x + c_out F(c_in x; t), F = the base's sample given the ControlNet's residuals, by hand
    controlnet = trained_looking(build_controlnet(base))
    x, sigma, render = inputs()
    sigma_data = 0.5
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    timestep = TIMESTEP_SCALE * torch.log(sigma) / 4
    scaled = x * c_in[:, None, None, None]
    down, mid = controlnet(scaled, timestep, encoder_hidden_states=None, controlnet_cond=render,
                           class_labels=torch.zeros(3, dtype=torch.long), return_dict=False)
    prediction = base(scaled, timestep, encoder_hidden_states=None, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid).sample
    by_hand = c_skip[:, None, None, None] * x + c_out[:, None, None, None] * prediction
    torch.testing.assert_close(edm_denoiser(base, controlnet)(x, sigma, unet_cond=render), by_hand)


@torch.no_grad()
def test_class_1_ignores_the_render_and_the_null_render_is_class_1(base):
    denoiser = edm_denoiser(base, trained_looking(build_controlnet(base)))
    x, sigma, render = inputs()
    other_render = inputs(seed=1)[2]
    ones, zeros = torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    unconditional = denoiser(x, sigma, unet_cond=render, class_labels=ones)
    assert torch.equal(denoiser(x, sigma, unet_cond=other_render, class_labels=ones), unconditional)
    assert not torch.allclose(denoiser(x, sigma, unet_cond=other_render, class_labels=zeros),
                              denoiser(x, sigma, unet_cond=render, class_labels=zeros))
    assert torch.equal(denoiser(x, sigma, unet_cond=null_condition(render)), unconditional)
    assert torch.equal(denoiser(x, sigma, unet_cond=render), denoiser(x, sigma, unet_cond=render, class_labels=zeros))
    # the class embedding itself matters: class 1 with the null render differs from class 0 with it
    assert not torch.allclose(denoiser(x, sigma, unet_cond=null_condition(render), class_labels=zeros), unconditional)


def test_guided_sampling_reproduces_with_a_seed(base):
    denoiser = edm_denoiser(base, trained_looking(build_controlnet(base)))
    render = inputs()[2]
    options = {"sampler": "euler", "steps": 4, "churn": 0.4, "guidance_scale": 2.0}
    first = sample_images(denoiser, render, seed=3, **options)
    assert torch.equal(sample_images(denoiser, render, seed=3, **options), first)
    assert not torch.equal(sample_images(denoiser, render, seed=4, **options), first)
    assert not torch.equal(sample_images(denoiser, render, seed=3, **{**options, "guidance_scale": 1.0}), first)
    unconditional = sample_images(edm_denoiser(base), shape=(2, 3, SIZE, SIZE), unconditional=True, steps=3, seed=0)
    assert unconditional.shape == (2, 3, SIZE, SIZE) and unconditional.abs().max() <= 1


@torch.no_grad()
def test_fp16_checkpoints_round_trip_and_a_missing_one_names_its_folder(base, tmp_path):
    controlnet = trained_looking(build_controlnet(base))
    save_pretrained(controlnet, tmp_path / "controlnet")
    save_pretrained(base, tmp_path / "base")
    assert next(controlnet.parameters()).dtype == torch.float32  # saving in fp16 left it unchanged
    loaded = load_controlnet(tmp_path / "controlnet")
    for name, tensor in controlnet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.half().float()), name
    x, sigma, render = inputs()
    torch.testing.assert_close(edm_denoiser(load_base(tmp_path / "base"), loaded)(x, sigma, unet_cond=render),
                               edm_denoiser(base, controlnet)(x, sigma, unet_cond=render), atol=5e-3, rtol=5e-3)
    with pytest.raises(FileNotFoundError, match="nowhere.*train-base"):
        load_base(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*train-controlnet"):
        load_controlnet(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=6, n_views=6, image_size=32, seed=0, progress=False)


def test_training_moves_the_controlnet_alone(cars, tmp_path):
    model = GeNVS(genvs_config("smoke"), seed=0)
    base = build_base(base_config("smoke"), seed=0)
    frozen = {name: tensor.clone() for name, tensor in [*base.state_dict().items(), *model.state_dict().items()]}
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=2, target_views=2, lr=1e-2, warmup_steps=1)
    controlnet, record = train_controlnet(model, cars, tmp_path / "run", 3, base, fit, save_every=0, progress=False)
    after = [*base.state_dict().items(), *model.state_dict().items()]
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in after)
    assert controlnet.controlnet_mid_block.weight.abs().max() > 0  # the zero convolution has moved
    assert record["steps"] == 3 and torch.isfinite(torch.tensor([record["loss_first"], record["loss_last"]])).all()
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4  # header + 3 steps
    assert json.loads((tmp_path / "run" / "training.json").read_text())["fit"]["cond_dropout"] == 0.1
    with pytest.raises(ValueError, match="16 px.*32 px"):
        train_controlnet(model, cars, tmp_path / "other", 1, build_base(base_config("smoke", image_size=16)), fit,
                         progress=False)


def test_the_base_trains_on_images_and_saves_what_it_returns(cars, tmp_path):
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=4, lr=1e-2, warmup_steps=1, cond_dropout=0.0)
    base, record = train_base(cars, tmp_path / "base", 2, base_config("smoke"), fit, progress=False)
    initial = build_base(base_config("smoke"), seed=fit.seed)
    assert not torch.equal(base.conv_in.weight, initial.conv_in.weight)
    reloaded = load_base(tmp_path / "base")
    assert all(torch.equal(reloaded.state_dict()[name], tensor) for name, tensor in base.state_dict().items())
    assert record["steps"] == 2
