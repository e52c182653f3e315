"""``evaluate`` and ``turntables``: GeNVS's samplers (and the diffusers routes) scored on held-out objects; lesson
08's table of every route's orbits."""

from __future__ import annotations

import argparse
from pathlib import Path

from genvs.artefacts import shipped_path
from genvs.cli.options import (
    COUNT,
    GUIDANCE_SCALE,
    INDEX,
    PROTOCOLS,
    SCALE,
    TURNTABLE_ROUTES,
    add_device,
    add_shipped,
    device,
    number,
    stop,
)

__all__ = ["add_commands"]

EVALUATION_OPTIONS = {"split": "split", "max_objects": "max_objects", "input_view": "input_view",
                      "targets": "target_views", "steps": "steps", "seed": "seed", "target_batch": "target_batch",
                      "object_batch": "object_batch", "draws": "draws"}
"""``evaluate``'s options that override the protocol: option -> :class:`genvs.evaluation.EvaluationConfig` field."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and ``turntables``."""
    evaluation = commands.add_parser("evaluate", help="regression baseline vs GeNVS samplers on held-out objects")
    evaluation.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    evaluation.add_argument("--data", required=True, type=Path, help="SRN-format root (cars_test/ ...)")
    evaluation.add_argument("--out", type=Path, default=Path("outputs/evaluation"),
                            help="folder for results.json, results.md, examples.png")
    evaluation.add_argument("--protocol", choices=PROTOCOLS, default="synthetic",
                            help="named protocol; the options below override its values")
    evaluation.add_argument("--split", choices=("test", "val"), help="held-out split")
    evaluation.add_argument("--max-objects", type=INDEX, help="first N objects of the split (0: all)")
    evaluation.add_argument("--input-view", type=INDEX, help="index of each object's input view (SRN cars: 64)")
    evaluation.add_argument("--targets", type=INDEX, help="target views spread over the others (0: all)")
    evaluation.add_argument("--steps", type=COUNT, help="sampler steps")
    evaluation.add_argument("--seed", type=INDEX)
    evaluation.add_argument("--target-batch", type=COUNT, help="targets sampled together")
    evaluation.add_argument("--object-batch", type=COUNT,
                            help="objects whose autoregressive trajectories are generated together (memory)")
    evaluation.add_argument("--draws", type=COUNT, help="samples per object for the attribute metrics (2 seeds)")
    add_device(evaluation)
    evaluation.add_argument("--no-lpips", action="store_true", help="skip LPIPS even if its weights are on disk")
    evaluation.add_argument("--probe", type=Path, help="attribute probe folder (default: the shipped one)")
    evaluation.add_argument("--no-attributes", action="store_true", help="skip the hidden-side attribute metrics")
    evaluation.add_argument("--guided", type=SCALE, nargs="+", default=[], metavar="W",
                            help="also score GeNVS sampled deterministically with classifier-free guidance scale W, "
                                 "a row 'guided w=W' each (1: the deterministic row; below 1 leans on the "
                                 "unconditional model, above on the condition)")
    evaluation.add_argument("--controlnet", type=Path, help="also score lesson 07's ControlNet route (its folder) on "
                            "the same condition and seeds")
    add_shipped(evaluation, "--controlnet-base", "controlnet_base", "the ControlNet's base U-Net")
    evaluation.add_argument("--guidance", type=SCALE, default=GUIDANCE_SCALE,
                            help="the ControlNet route's classifier-free guidance scale")
    evaluation.set_defaults(run=evaluate_command)

    turntables = commands.add_parser("turntables", help="lesson 08's table: every route's orbits, scored")
    turntables.add_argument("--data", type=Path, default=Path("data/generated/reference_cars_32"),
                            help="synthetic cars (their test split; the truth is re-rendered exactly)")
    add_shipped(turntables, "--checkpoint", "lesson", "GeNVS model")
    add_shipped(turntables, "--base", "controlnet_base", "the routes' base U-Net")
    add_shipped(turntables, "--controlnet", "controlnet", "lesson 07's ControlNet")
    add_shipped(turntables, "--multiview", "multiview", "lesson 08's multi-view ControlNet")
    add_shipped(turntables, "--raycond", "raycond", "lesson 08's 2D-only ControlNet")
    turntables.add_argument("--objects", type=COUNT, default=8)
    turntables.add_argument("--frames", type=number(int, at_least=2), default=12,
                            help="frames per orbit (consistency compares consecutive frames: at least 2)")
    turntables.add_argument("--steps", type=COUNT, default=25)
    turntables.add_argument("--seed", type=INDEX, default=0)
    add_device(turntables)
    turntables.add_argument("--out", type=Path, default=Path("outputs/turntables.json"))
    turntables.add_argument("--routes", nargs="+", choices=TURNTABLE_ROUTES, metavar="ROUTE",
                            help="generate only these routes (default: all); an existing --out made with the same "
                                 "settings keeps the other routes' rows, so one retrained route is re-scored alone. "
                                 f"Routes: {', '.join(TURNTABLE_ROUTES)}")
    turntables.set_defaults(run=turntables_command)


def evaluation_routes(args: argparse.Namespace, model, steps: int, where: str) -> dict:
    """The extra rows ``evaluate`` scores (:class:`genvs.routes.RenderRoute`): ``--guided`` scales of GeNVS's
    denoiser, and the ``--controlnet`` route on the same render."""
    from genvs.controlnet import controlnet_route
    from genvs.routes import RenderRoute
    from genvs.sampling import sampling_options

    routes = {f"guided w={scale:g}": RenderRoute(model, options=sampling_options("guided", steps, guidance_scale=scale))
              for scale in args.guided}
    if args.controlnet is not None:
        controlnet = controlnet_route(args.controlnet_base, args.controlnet, where)
        options = {**sampling_options("stochastic", steps), "guidance_scale": args.guidance}
        routes["controlnet"] = RenderRoute(model, controlnet, options)
    return routes


def evaluate_command(args: argparse.Namespace) -> None:
    """Score the regression baseline and GeNVS's samplers on held-out objects; write JSON, markdown and a figure."""
    import dataclasses
    import json

    from genvs.evaluation import PROTOCOLS as CONFIGS
    from genvs.evaluation import evaluate, results_table
    from genvs.model import load_model
    from genvs.probe import load_probe
    from genvs.viz import plot_evaluation_examples

    chosen = {field: getattr(args, option) for option, field in EVALUATION_OPTIONS.items()
              if getattr(args, option) is not None}
    where = device(args)
    config = dataclasses.replace(CONFIGS[args.protocol], **chosen)
    model, checkpoint = load_model(args.checkpoint, device=where)
    attributes = (False if args.no_attributes else
                  load_probe(args.probe, device=where)[0] if args.probe is not None else True)
    results = evaluate(model, args.data, config, device=where, lpips=not args.no_lpips, attributes=attributes,
                       routes=evaluation_routes(args, model, config.steps, where))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = results.pop("examples")
    results["checkpoint"] = {"path": str(args.checkpoint), "step": checkpoint["step"]}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = results_table(results)
    (out / "results.md").write_text(f"Checkpoint {args.checkpoint} (step {checkpoint['step']}), data {args.data}\n\n"
                                     + table)
    plot_evaluation_examples(examples).savefig(out / "examples.png", dpi=120)
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'examples.png'}")


def earlier_turntables(out: Path, config: dict) -> dict | None:
    """The results already in ``out`` (None if there are none), refused if made with other settings than ``config``
    (a setting ``out`` does not record, such as an older file's seed, is taken to match)."""
    import json

    if not out.is_file():
        return None
    earlier = json.loads(out.read_text())
    differ = {key: value for key, value in earlier["config"].items() if config.get(key) != value}
    if differ:
        stop(f"{out} was made with other settings ({differ}, now "
             f"{ {key: config.get(key) for key in differ} }): choose another --out, or run every route")
    return earlier


def turntables_command(args: argparse.Namespace) -> None:
    """Lesson 08's table: every route's orbits of held-out synthetic cars, scored; written as JSON."""
    import json

    from genvs.controlnet import controlnet_route
    from genvs.model import load_model
    from genvs.multiview import multiview_route
    from genvs.probe import load_probe
    from genvs.raycond import raycond_route
    from genvs.turntable import TURNTABLE_METRICS, TurntableConfig, compare_turntables, standard_routes

    where = device(args)
    config = TurntableConfig(n_objects=args.objects, n_frames=args.frames, steps=args.steps, seed=args.seed)
    chosen = set(args.routes or TURNTABLE_ROUTES)
    earlier = earlier_turntables(args.out, vars(config)) if args.routes else None
    model, _ = load_model(args.checkpoint, device=where)
    wanted = {"controlnet": "controlnet" in chosen, "raycond": "2d_only" in chosen,
              "multiview": bool(chosen & {"multiview_chunked", "multiview_autoregressive"})}
    routes = standard_routes(model, config,
                             controlnet_route(args.base, args.controlnet, where) if wanted["controlnet"] else None,
                             multiview_route(args.base, args.multiview, where) if wanted["multiview"] else None,
                             raycond_route(args.base, args.raycond, where) if wanted["raycond"] else None)
    probe, _ = load_probe(shipped_path("probe"), device=where)
    results = compare_turntables({name: route for name, route in routes.items() if name in chosen}, args.data,
                                 probe, config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = {key: {**(earlier or {}).get(key, {}), **results[key]} for key in ("scores", "per_object", "seconds")}
    args.out.write_text(json.dumps({**kept, "config": vars(config)}, indent=1))
    for name, scores in results["scores"].items():
        print(f"{name:26s}" + " ".join(f"{metric} {scores[metric]['mean']:.3f}" for metric in TURNTABLE_METRICS
                                        if metric in scores))
    print(f"saved to {args.out}")
