"""Training in legs: a model trained in pieces on whatever compute is at hand, each piece scored the same way.

A leg is one training run with its own warmup and decay, started from a saved model (``init``, usually the shipped
export) or from scratch, then exported (EMA weights in fp16) and scored on the held-out protocol
(:data:`genvs.evaluation.PROTOCOLS` ``"synthetic"``). Its record holds where it ran, its steps, the target images it
saw, its minutes of training and the protocol's headline scores (:data:`HEADLINE`), so that legs run on a laptop
CPU and on a GPU add up in one table (:func:`legs_table`, the model card's).

A leg replaces the shipped model only when it is no worse on any headline row (:func:`compare`): a row moves when
the two means differ by more than one spread, the shipped model's standard deviation over the protocol's objects.
:func:`ship_leg` copies the export over the shipped one (one weights file per shipped model) and appends the record
to the shipped folder's ``legs.json``.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import torch

from genvs.checkpoint import CheckpointError, latest_checkpoint
from genvs.evaluation import PROTOCOLS, EvaluationConfig, evaluate
from genvs.fitting import read_log
from genvs.model import load_model
from genvs.training import TrainConfig, Trainer, export_model

__all__ = ["HEADLINE", "headline_scores", "compare", "comparison_table", "leg_record", "legs_table", "run_leg",
           "score_leg", "ship_leg", "describe_compute", "LEGS_FILE"]

LEGS_FILE = "legs.json"

HEADLINE: dict[str, tuple[str, str, str, int]] = {
    # row: (section of the evaluation results, method, metric, +1 if higher is better else -1)
    "regression PSNR": ("metrics", "regression", "psnr", +1),
    "stochastic PSNR": ("metrics", "stochastic", "psnr", +1),
    "stochastic detail": ("metrics", "stochastic", "detail", +1),
    "unseen TV to prior": ("attribute_metrics", "stochastic", "unseen_tv", -1),
    "unseen confidence": ("attribute_metrics", "stochastic", "unseen_confidence", +1),  # the truth's: 0.98
    "seen accuracy": ("attribute_metrics", "stochastic", "seen_accuracy", +1),
    "autoregressive consistency": ("metrics", "autoregressive", "consistency", +1),
}
"""The protocol's headline rows: the stochastic sampler's unless named otherwise."""


def headline_scores(results: dict) -> dict[str, dict[str, float]]:
    """``{row: {"mean", "std"}}`` of the :data:`HEADLINE` rows in evaluation ``results`` (``evaluate``'s dict).

    Raises:
        KeyError: naming the row the results lack (e.g. an evaluation run without the attribute probe).
    """
    scores = {}
    for row, (section, method, metric, _) in HEADLINE.items():
        try:
            value = results[section][method][metric]
        except KeyError:
            raise KeyError(f"the evaluation results have no {section}[{method!r}][{metric!r}] for the row "
                           f"{row!r}: score with the attribute probe and every method") from None
        scores[row] = {"mean": value["mean"], "std": value["std"]}
    return scores


def compare(scores: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, str]:
    """Each headline row of ``scores`` against ``reference``: "better", "worse" or "within" one spread.

    A row moves when ``|mean - mean_ref| > std_ref`` (the reference's standard deviation over objects); its
    direction comes from :data:`HEADLINE`.
    """
    verdicts = {}
    for row, (_, _, _, sign) in HEADLINE.items():
        change = scores[row]["mean"] - reference[row]["mean"]
        moved = abs(change) > reference[row]["std"]
        verdicts[row] = "within" if not moved else "better" if sign * change > 0 else "worse"
    return verdicts


def comparison_table(scores: dict[str, dict[str, float]], reference: dict[str, dict[str, float]],
                     names: tuple[str, str] = ("shipped", "leg")) -> str:
    """Markdown table of the headline rows side by side: the reference, ``scores`` and :func:`compare`'s verdict."""
    verdicts = compare(scores, reference)
    lines = [f"| row | {names[0]} | {names[1]} | {names[1]} vs {names[0]} |", "|---|---|---|---|"]
    lines += [f"| {row} | {_score(row, reference[row])} | {_score(row, scores[row])} | {verdicts[row]} |"
              for row in HEADLINE]
    return "\n".join(lines) + "\n"


def describe_compute(device: torch.device) -> str:
    """Where a leg ran, in words: the GPU's name, or the CPU and torch's thread count."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"CPU: {threads} thread{'s' if threads > 1 else ''} of {platform.processor() or platform.machine()}"


def leg_record(run: str | Path, results: dict, where: str, init: str | Path | None, world_size: int = 1) -> dict:
    """A leg's row: where it ran, its init, steps, target images seen, training minutes and headline scores.

    Args:
        run: the leg's run folder (``config.json`` and ``log.csv`` of :class:`genvs.training.Trainer`).
        results: the export's evaluation (:func:`genvs.evaluation.evaluate`).
        where: where it ran (:func:`describe_compute`).
        init: the model it started from (None: from scratch).
        world_size: processes that trained together (each saw its own batches).
    Returns:
        ``{"where", "init", "steps", "target_images", "minutes", "scores"}``; images are
        ``steps x batch_size x target_views x grad_accumulation x world_size``; minutes sum the log's training
        seconds (resumed parts included, evaluation and export not).
    """
    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    log = read_log(run)
    if not log:
        raise CheckpointError(f"{run}: no log.csv rows; is it a training run folder?")
    steps = int(log[-1]["step"])
    per_step = config["batch_size"] * config["target_views"] * config["grad_accumulation"] * world_size
    return {"where": where, "init": None if init is None else str(init), "steps": steps,
            "target_images": steps * per_step, "minutes": round(sum(row["seconds"] for row in log) / 60, 1),
            "scores": headline_scores(results)}


def legs_table(records: list[dict]) -> str:
    """Markdown table, one row per leg record: where, from what, steps, target images, minutes and each headline
    score."""
    header = ["leg", "where", "from", "steps", "target images", "minutes", *HEADLINE]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for number, record in enumerate(records, start=1):
        cells = [str(number), record["where"], "scratch" if record["init"] is None else f"`{record['init']}`",
                 f"{record['steps']:,}", f"{record['target_images']:,}", f"{record['minutes']:.0f}"]
        cells += [_score(row, record["scores"][row]) for row in HEADLINE]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score(row: str, value: dict[str, float]) -> str:
    digits = 2 if "PSNR" in row or "consistency" in row else 3
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def run_leg(config: TrainConfig, train_data: str | Path, protocol_data: str | Path, out: str | Path, steps: int, *,
            init: str | Path | None = None, resume: bool = False, device: torch.device | str | None = None,
            where: str | None = None, checkpoint_every: int | None = None,
            progress: bool = True) -> tuple[dict, dict]:
    """Train one leg, export it, score it on the protocol and write its record.

    Writes into ``out``: the run (checkpoints, ``log.csv``, ``config.json``), ``export/`` (fp16 EMA weights,
    :func:`genvs.training.export_model`), ``evaluation.json`` (:data:`genvs.evaluation.PROTOCOLS` ``"synthetic"``
    on ``protocol_data``'s test cars, LPIPS skipped) and ``leg.json`` (:func:`leg_record`). With ``resume``, a leg
    stopped part-way continues from its latest checkpoint, and a finished one is exported and scored again.

    Args:
        config: the training config (e.g. ``genvs.training.PRESETS["lesson"]``); with ``init``, its model must
            have the init's architecture.
        train_data, protocol_data: SRN-format roots: the leg trains on the first's train split and is scored on
            the second's test split.
        steps: the leg's optimiser steps (its warmup + cosine schedule spans them).
    Returns:
        the leg record (:func:`leg_record`) and the evaluation's ``examples`` (the predictions of its first cars,
        for :func:`genvs.viz.plot_evaluation_examples`); two empty dicts on processes other than rank 0.
    """
    out = Path(out)
    trainer = Trainer(config, train_data, out, steps, resume=resume, init=init, device=device, sample_every=0,
                      checkpoint_every=checkpoint_every, progress=progress)
    try:
        trainer.run()
    finally:
        trainer.close()
    if trainer.rank:
        return {}, {}
    return score_leg(out, protocol_data, init=init, where=where or describe_compute(trainer.device),
                     device=trainer.device, world_size=trainer.fitter.world_size, progress=progress)


def score_leg(out: str | Path, protocol_data: str | Path, *, init: str | Path | None, where: str,
              protocol: EvaluationConfig = PROTOCOLS["synthetic"], device: torch.device | str | None = None,
              world_size: int = 1, progress: bool = True) -> tuple[dict, dict]:
    """Export a leg's run and score it: what :func:`run_leg` does after training, and what a leg trained by other
    means (a time-boxed GPU call) needs to be shipped by :func:`ship_leg`.

    Writes into ``out`` (a :class:`genvs.training.Trainer` run folder): ``export/`` (fp16 EMA weights),
    ``evaluation.json`` (``protocol`` on ``protocol_data``'s test cars, LPIPS skipped) and ``leg.json``
    (:func:`leg_record`). A leg folder without the run's checkpoints (one that came back from a GPU call with
    ``export/``, ``config.json`` and ``log.csv`` alone) is scored from its ``export/``.

    Args:
        out: the leg's run folder.
        protocol_data: SRN-format root whose test split the protocol scores.
        init, where, world_size: the record's fields (:func:`leg_record`).
        protocol: the protocol (the synthetic one; a copy with another ``object_batch`` scores the same).
    Returns:
        the leg record and the evaluation's ``examples``.
    """
    out = Path(out)
    if latest_checkpoint(out) is not None:
        export_model(out, out / "export")
    model, checkpoint = load_model(out / "export", device=device)
    results = evaluate(model, protocol_data, protocol, device=device, lpips=False, progress=progress)
    examples = results.pop("examples")
    results["checkpoint"] = {"path": str(out / "export"), "step": checkpoint["step"]}
    (out / "evaluation.json").write_text(json.dumps(results, indent=1) + "\n")
    record = leg_record(out, results, where, init, world_size)
    (out / "leg.json").write_text(json.dumps(record, indent=1) + "\n")
    return record, examples


def ship_leg(leg: str | Path, shipped: str | Path, force: bool = False) -> dict[str, str]:
    """Replace the shipped model in ``shipped`` by leg ``leg``'s export when no headline row got worse.

    The shipped folder keeps one weights file: its ``step_*`` files are replaced by the export's; the leg's
    ``evaluation.json`` replaces the shipped one and its record is appended to ``legs.json``. The model card is
    left to its author (:func:`legs_table` gives its table).

    Args:
        leg: a folder :func:`run_leg` wrote.
        shipped: the shipped model's folder (with ``evaluation.json``; a first ship needs ``force``).
        force: ship even if a row got worse, or with no shipped evaluation to compare with.
    Returns:
        the verdict per headline row (:func:`compare`; empty without a shipped evaluation).
    Raises:
        ValueError: a row got worse (named) and ``force`` is False.
    """
    leg, shipped = Path(leg), Path(shipped)
    record = json.loads((leg / "leg.json").read_text())
    shipped_results = shipped / "evaluation.json"
    verdicts = {}
    if shipped_results.is_file():
        verdicts = compare(record["scores"], headline_scores(json.loads(shipped_results.read_text())))
    elif not force:
        raise ValueError(f"{shipped_results} does not exist: nothing to compare {leg} with (force=True ships it)")
    worse = [row for row, verdict in verdicts.items() if verdict == "worse"]
    if worse and not force:
        raise ValueError(f"{leg} is worse than {shipped} by more than one spread on {worse}: not shipped")
    legs_path = shipped / LEGS_FILE
    records = json.loads(legs_path.read_text()) if legs_path.is_file() else []
    shipped.mkdir(parents=True, exist_ok=True)
    for old in [*shipped.glob("step_*"), shipped / "latest.json"]:
        old.unlink(missing_ok=True)
    for new in (leg / "export").iterdir():
        shutil.copy2(new, shipped / new.name)
    results = json.loads((leg / "evaluation.json").read_text())
    results["checkpoint"]["path"] = str(shipped)
    shipped_results.write_text(json.dumps(results, indent=1) + "\n")
    legs_path.write_text(json.dumps([*records, record], indent=1) + "\n")
    return verdicts
