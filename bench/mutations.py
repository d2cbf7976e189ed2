"""Mutation check of the wiring tests: apply named source mutations, one at a time, to a temporary copy of the
checkout, run the tests that should catch each, and print which mutations survive.

    python bench/mutations.py                 # every mutation
    python bench/mutations.py faprompt_ce_focal_swapped dreambooth_reads_test_images
    python bench/mutations.py --list

Each mutation is a plausible wiring bug: a parameter dropped, replaced by its default, swapped with its
neighbour, the wrong split or dataset feeding a stage, the workflow passing the wrong value. A survivor is a gap in
the tests (or an equivalent mutation, which cannot change any output: say why in the mutation's ``why``).
A developer tool, not part of CI: each mutation runs its tests in a fresh copy (seconds to a few minutes each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".git", "results", ".snakemake", "__pycache__", ".pytest_cache", "*.egg-info", ".whl", ".venv")


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once in ``file``) by ``new``; ``tests`` must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


U, DAG = "tests/unit/", "tests/dag/"
MUTATIONS = [
    # --- WinCLIP and the anomalous memory ---------------------------------------------------------
    Mutation("winclip_temperature_replaced_by_the_presets", "fsad/scorers/winclip/scorer.py",
             "temperature = prompt_temperature(params)", 'temperature = prompt_temperature({**params, "temperature": None})',
             (U + "test_parameters_winclip.py",)),
    Mutation("winclip_window_sizes_cut_to_the_first", "fsad/scorers/winclip/scorer.py",
             'window_sizes = list(params["window_sizes"])', 'window_sizes = list(params["window_sizes"])[:1]', (U + "test_parameters_winclip.py",)),
    Mutation("anomalous_memory_coverage_threshold_at_its_default", "fsad/scorers/anomalous_memory/scorer.py",
             'coverage_threshold = float(params["coverage_threshold"])', "coverage_threshold = 0.5", (U + "test_parameters_anomalous_memory.py",)),
    Mutation("anomalous_memory_augmentations_dropped", "fsad/scorers/anomalous_memory/scorer.py",
             'params["n_augmentations"])', "10)", (U + "test_parameters_anomalous_memory.py",)),
    Mutation("anomalous_memory_draws_at_their_default", "fsad/scorers/anomalous_memory/scorer.py",
             '        params["n_draws"],', "        100,", (U + "test_parameters_anomalous_memory.py",)),
    # --- FAPrompt / AnomalyCLIP -----------------------------------------------------------------------
    Mutation("faprompt_ce_and_focal_weights_swapped", "fsad/scorers/faprompt/params.py",
             'image_ce=params["image_ce_weight"],\n        image_focal=params["image_focal_weight"],',
             'image_ce=params["image_focal_weight"],\n        image_focal=params["image_ce_weight"],', (U + "test_parameters_faprompt.py",)),
    Mutation("faprompt_orthogonal_weight_at_its_default", "fsad/scorers/faprompt/params.py",
             'orthogonal=params["orthogonal_weight"],', "orthogonal=0.1,", (U + "test_parameters_faprompt.py",)),
    Mutation("faprompt_smoothing_at_its_default", "fsad/scorers/faprompt/scorer.py", 'params["sigma"]', "10", (U + "test_parameters_faprompt.py",)),
    Mutation("faprompt_static_and_prior_map_weights_swapped", "fsad/scorers/faprompt/params.py",
             'static_map=params["static_map_weight"],\n        prior_map=params["prior_map_weight"],',
             'static_map=params["prior_map_weight"],\n        prior_map=params["static_map_weight"],', (U + "test_parameters_faprompt.py",)),
    # --- DevPrompt / PromptAD --------------------------------------------------------------------------
    Mutation("devprompt_lambda_dev_dropped", "fsad/scorers/devprompt/fit.py", 'lambda_dev=params["lambda_dev"]', "lambda_dev=1.0",
             (U + "test_parameters_devprompt.py",)),
    Mutation("devprompt_margin_and_topk_swapped", "fsad/scorers/devprompt/fit.py",
             'margin=params["margin"],\n        topk_ratio=params["topk_ratio"],', 'margin=params["topk_ratio"],\n        topk_ratio=params["margin"],',
             (U + "test_parameters_devprompt.py",)),
    Mutation("devprompt_smoothing_dropped", "fsad/scorers/devprompt/scorer.py", 'smooth(concat_numpy(maps), params["smoothing_sigma"])',
             "smooth(concat_numpy(maps), 4.0)", (U + "test_parameters_devprompt.py",)),
    Mutation("devprompt_alignment_weight_at_its_default", "fsad/scorers/devprompt/fit.py", 'alignment_weight=params["alignment_weight"]',
             "alignment_weight=0.001", (U + "test_parameters_devprompt.py",)),
    # --- One-to-Normal and the generators ----------------------------------------------------------------
    Mutation("one_to_normal_alpha_and_beta_swapped_in_the_image_score", "fsad/scorers/one_to_normal/scorer.py",
             'values = {"score": combine(out.scores, params["alpha"], params["beta"])', 'values = {"score": combine(out.scores, params["beta"], params["alpha"])',
             (U + "test_parameters_one_to_normal.py",)),
    Mutation("one_to_normal_beta_dropped_from_the_maps", "fsad/scorers/one_to_normal/scorer.py",
             'combined = combine(out.maps, params["alpha"], params["beta"])', 'combined = combine(out.maps, params["alpha"], 0.5)',
             (U + "test_parameters_one_to_normal.py",)),
    Mutation("one_to_normal_memory_size_ignored", "fsad/scorers/one_to_normal/scorer.py", 'ctx.params["memory_size"]', "30",
             (U + "test_parameters_one_to_normal.py",)),
    Mutation("one_to_normal_text_map_lr_at_its_default", "fsad/scorers/one_to_normal/fit.py", 'lr=params["text_map_lr"]', "lr=1e-3",
             (U + "test_parameters_one_to_normal.py",)),
    Mutation("dreambooth_prior_loss_weight_dropped", "fsad/diffusion/dreambooth.py",
             'dreambooth_loss(prediction, target, batch.n_instance, params["prior_loss_weight"])', "dreambooth_loss(prediction, target, batch.n_instance, 1.0)",
             (U + "test_parameters_generators.py",)),
    Mutation("dreambooth_grad_clipping_at_its_default", "fsad/diffusion/dreambooth.py", 'clip_grad_norm_(trainable, params["max_grad_norm"])',
             "clip_grad_norm_(trainable, 1.0)", (U + "test_parameters_generators.py",)),
    Mutation("pool_strength_and_guidance_swapped", "fsad/diffusion/stages.py",
             'section["strength"], section["steps"], section["guidance_scale"], section["batch_size"]\n    )',
             'section["guidance_scale"], section["steps"], section["strength"], section["batch_size"]\n    )', (U + "test_parameters_generators.py",)),
    Mutation("personalization_steps_at_their_default", "fsad/diffusion/stages.py",
             'fixed, section["strength"], section["steps"], section["guidance_scale"]', 'fixed, section["strength"], 50, section["guidance_scale"]',
             (U + "test_parameters_generators.py",)),
    # --- what a stage reads ---------------------------------------------------------------------------
    Mutation("dreambooth_trains_on_the_test_images_too", "fsad/diffusion/stages.py",
             "    refs = _normal_refs(split)\n    resolution", "    refs = _normal_refs(split) + split.test[:1]\n    resolution", (U + "test_leak_guards.py",)),
    Mutation("pool_varies_a_test_image", "fsad/diffusion/stages.py",
             "    refs = _normal_refs(split)\n    pipeline", "    refs = split.test[:1] + _normal_refs(split)\n    pipeline", (U + "test_leak_guards.py",)),
    Mutation("personalization_reads_the_first_query_for_every_query", "fsad/diffusion/stages.py",
             "_run_images(split, manifest_path, split.test)]", "_run_images(split, manifest_path, split.test[:1] * len(split.test))]", (U + "test_leak_guards.py",)),
    Mutation("devprompt_synthetic_anomalies_from_a_test_image", "fsad/scorers/devprompt/fit.py",
             'for image_id in ctx.split.normal_refs]', "for image_id in ctx.split.test[:1]]", (U + "test_leak_guards.py",)),
    Mutation("weight_validation_augments_the_test_images", "fsad/scorers/anomalous_memory/scorer.py",
             "for image_id, share in zip(ctx.split.validation, counts):", "for image_id, share in zip(ctx.split.test, counts):",
             (U + "test_leak_guards.py",)),
    # --- the workflow layer -------------------------------------------------------------------------
    Mutation("workflow_fit_jobs_get_the_score_parameters", "rules/common.smk",
             "return canonical(METHODS[wildcards.scorer].fit_params(PARAMS[wildcards.scorer]))",
             "return canonical(METHODS[wildcards.scorer].score_params(PARAMS[wildcards.scorer]))", (DAG,)),
    Mutation("workflow_train_dataset_mapping_reads_only_its_default", "rules/common.smk",
             'return choice if isinstance(choice, str) else choice.get(dataset, choice.get("default"))',
             'return choice if isinstance(choice, str) else choice.get("default")', (DAG,)),
    Mutation("workflow_training_stores_miss_what_their_fits_read", "rules/common.smk",
             "dataset in {*scorer_datasets(scorer), *fit_datasets(scorer)}", "dataset in {*scorer_datasets(scorer)}", (DAG,)),
    Mutation("workflow_setting_runs_rerun_every_split", "rules/common.smk",
             'canonical({k: v for k, v in SETTINGS[wildcards.setting].items() if k != "runs"})', "canonical(SETTINGS[wildcards.setting])", (DAG,)),
    Mutation("workflow_report_parameters_reach_score_jobs", "fsad/scorers/method.py",
             'names = set(self.stage_names("score"))', 'names = set(self.stage_names("score")) | set(self.stage_names("report"))', (DAG,)),
    # --- evaluation and reports ------------------------------------------------------------------------
    Mutation("metrics_say_pretrained_weights", "fsad/evaluation/collect.py",
             '    row["environment"] = environment_line(keys["environment"])', '    row["environment"] = environment_line(keys["environment"])\n    row["weights"] = "pretrained"',
             ("tests/workflow/test_contract.py",)),
    Mutation("pixel_metrics_read_masks_in_manifest_order", "fsad/evaluation/collect.py",
             'manifest.loc[scores["image_id"], "mask_path"].tolist()', 'manifest.loc[sorted(scores["image_id"], reverse=True), "mask_path"].tolist()',
             ("tests/workflow/test_contract.py",)),
]


def copy_checkout(target: Path) -> Path:
    """The working tree as it is now (committed or not), without results and caches."""
    shutil.copytree(ROOT, target, ignore=IGNORED, symlinks=True)
    return target


def apply(mutation: Mutation, tree: Path) -> None:
    path = tree / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"mutation {mutation.name}: {mutation.file} holds its text {count} times, not once; update the mutation")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(tree: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, float, str]:
    """Whether the tests pass in ``tree`` (its ``fsad`` first on the path), the seconds taken, the output's tail."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - started, "timed out (counted as killed)"
    return proc.returncode == 0, time.perf_counter() - started, (proc.stdout + proc.stderr)[-1500:]


def check_imports_the_copy(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run([sys.executable, "-c", "import fsad; print(fsad.__file__)"], cwd=tree, env=env, capture_output=True, text=True, check=True)
    if not where.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"the copy's tests would import fsad from {where.stdout.strip()}, not from {tree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutation's test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the check that the unmutated tests pass")
    args = parser.parse_args()
    by_name = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown mutations {unknown}; --list shows them")
    chosen = [by_name[n] for n in args.names] or MUTATIONS
    if args.list:
        for m in chosen:
            print(f"{m.name:45s} {m.file}  ->  {' '.join(m.tests)}")
        return 0

    survivors = []
    with tempfile.TemporaryDirectory(prefix="fsad-mutations-") as scratch:
        pristine = copy_checkout(Path(scratch) / "pristine")
        check_imports_the_copy(pristine)
        for m in chosen:  # every mutation's text must be there before anything runs
            apply(m, copy_checkout(Path(scratch) / "probe"))
            shutil.rmtree(Path(scratch) / "probe")
        if not args.no_baseline:
            tests = tuple(sorted({t for m in chosen for t in m.tests}))
            passed, seconds, tail = run_tests(pristine, tests, args.timeout)
            print(f"baseline: {'passes' if passed else 'FAILS'} ({seconds:.0f} s, {len(tests)} test files)")
            if not passed:
                print(tail)
                return 2
        for m in chosen:
            tree = Path(scratch) / m.name
            shutil.copytree(pristine, tree, symlinks=True)
            apply(m, tree)
            passed, seconds, _ = run_tests(tree, m.tests, args.timeout)
            print(f"{'SURVIVED' if passed else 'killed  '}  {m.name:45s} {seconds:6.0f} s" + (f"  ({m.why})" if passed and m.why else ""), flush=True)
            if passed:
                survivors.append(m.name)
            shutil.rmtree(tree)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutations killed" + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
