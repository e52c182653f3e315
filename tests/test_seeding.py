import torch

from genvs.seeding import draw, seeded_rng


def test_seeded_rng_fixes_draws_and_restores_the_state():
    state = torch.get_rng_state()
    with seeded_rng(7, torch.device("cpu")):
        a = torch.randn(3)
    with seeded_rng(7, torch.device("cpu")):
        b = torch.randn(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)


def test_draw_follows_the_generator_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first = draw(torch.randn, (4,), torch.Generator().manual_seed(3), "cpu", torch.float64)
    again = draw(torch.randn, (4,), torch.Generator().manual_seed(3))
    assert first.dtype == torch.float64 and again.dtype == torch.float32
    torch.testing.assert_close(first.float(), again)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(again, draw(torch.randn, (4,), torch.Generator().manual_seed(4)))


def test_derived_seeds_are_fixed_distinct_and_fit_a_generator():
    from genvs.seeding import derive_seed

    seeds = [derive_seed(seed, index) for seed in range(3) for index in range(100)]
    assert len(set(seeds)) == len(seeds) and all(0 <= value < 2**63 for value in seeds)
    assert derive_seed(7, 3) == derive_seed(7, 3)
    torch.Generator().manual_seed(max(seeds))  # accepted by torch


def test_seeded_rng_names_the_device_type_for_older_torch(monkeypatch):
    """torch before 2.15 calls ``torch.device(device_type)`` in ``fork_rng`` and fails on None (the GPU machine's
    torch 2.11 did, on CPU-seeded initialisation); seeded_rng must always pass a type."""
    fork_rng = torch.random.fork_rng

    def strict_fork_rng(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices", device_type="cuda"):
        torch.device(device_type)  # what torch 2.11 does first
        return fork_rng(devices=devices, enabled=enabled, device_type=device_type)

    monkeypatch.setattr(torch.random, "fork_rng", strict_fork_rng)
    with seeded_rng(3, torch.device("cpu")):
        first = torch.rand(2)
    with seeded_rng(3, torch.device("cpu")):
        assert torch.equal(torch.rand(2), first)
