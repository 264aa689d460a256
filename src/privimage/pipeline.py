"""The whole PrivImage method, top to bottom: `run(config, out_dir)`.

    1. semantic query function   a classifier trained on the PUBLIC labels only
    2. DP semantic distribution  noisy top-k histogram of the sensitive data (charged to the ledger)
    3. selection                 public classes per sensitive class, relabelled
    4. pre-training              the conditional generator (`generator`: diffusion or gan) on the selected public images
    5. DP fine-tuning            DP-SGD on the sensitive images, sigma calibrated to the TOTAL budget
    then sampling, evaluation (CA, FID) and the HTML report.

Each method (privimage and the baselines none / all / random) is its own release with its own ledger and
the full budget; they are releases of the same data, so metrics.json also gives their composed epsilon.
Before anything is written or charged, `preflight` checks everything the steps will need (config, data,
device, budget, FID). Every step is skipped when its output exists in the run directory, which holds
results of exactly one config (config.json + hash) and one run at a time (`rundir`: a lock, and ledgers
that cannot be silently lost), so a killed run resumes where it stopped; privacy already spent stays in
the ledger and is never charged twice. Rerunning a finished run changes nothing.

Example:
    >>> from privimage.run_config import load_run_config
    >>> metrics = run(load_run_config("configs/demo.yaml"), "runs/demo")
"""

import logging
import time
from pathlib import Path

from torch import nn

from privimage import distributed
from privimage.baselines import UNCONDITIONAL, baseline_public_data
from privimage.data import ImageSet
from privimage.data import demo
from privimage.errors import UserError
from privimage.evaluate.ca import classification_accuracies
from privimage.evaluate.previews import save_previews
from privimage.evaluate.provenance import provenance
from privimage.evaluate.report import write_report
from privimage.generators import family
from privimage.preflight import Inputs, preflight
from privimage.privacy.ledger import Ledger, epsilon_composed
from privimage.privacy.rng import noise_generator, noise_source
from privimage.run_config import RunConfig
from privimage.rundir import finished_metrics, open_run_dir
from privimage.sample import load_samples, save_samples
from privimage.semantic.classifier import load_classifier, save_classifier, train_classifier
from privimage.files import read_json, write_json_atomic
from privimage.log import progress_enabled
from privimage.timings import FILE as FILE_TIMINGS, split_timings
from privimage.device import resolve_device
from privimage.semantic.query import dp_semantic_distribution, query_epsilon_of, query_sigma
from privimage.semantic.recipes import recipe_for
from privimage.semantic.selection import (UNLABELLED_CLASS, Selection, apply_selection, check_selectable,
                                          random_subset, select, selection_precision)
from privimage.train.finetune import calibrate_for_ledger, plan

log = logging.getLogger(__name__)


def run(config: RunConfig, out_dir, *, device="auto", progress: bool = True,
        data: tuple[ImageSet, ImageSet | None, ImageSet] | None = None) -> dict:
    """Run every method of `config` in `out_dir`; returns metrics.json's content.

    `data` = (sensitive, test or None, public) given in memory (the Python API) instead of config.data's paths.
    """
    t0, progress = time.time(), progress_enabled(progress)
    if distributed.world_size() > 1 and config.generator != "diffusion":
        raise UserError(f"generator {config.generator} runs in one process only; launch it without torchrun")
    inputs = preflight(config, device=device, data=data, progress=progress)  # every check first: nothing spent
    with open_run_dir(out_dir, config) as out:  # locked against a concurrent run; ledgers checked
        done = finished_metrics(out, config) if distributed.is_main() else None  # a finished run is left as it is
        done = distributed.broadcast_json(done)  # rank 0's answer, on every process
        return done if done is not None else run_methods(config, inputs, out, t0=t0, progress=progress)


def run_methods(config: RunConfig, inputs: Inputs, out: Path, *, t0: float, progress: bool) -> dict:
    """The five steps for each method in the (locked, checked) run directory `out`.

    Under torchrun every process runs this; rank 0 alone trains the semantic classifier, queries (its
    ledger), writes files and evaluates, the others join pre-training, DP fine-tuning and sampling.
    """
    sensitive, test, public, device = inputs.sensitive, inputs.test, inputs.public, inputs.device
    methods, selection, selected, ledgers = {}, None, None, []
    if distributed.is_main():
        write_json_atomic(out / "provenance.json", provenance(config, device))  # versions, device, data identity

    # 1. Semantic query function: trained on public labels only (it never sees sensitive data).
    if "privimage" in config.methods and distributed.is_main():
        log.info("1/5 semantic query function: a classifier of the %d public classes (%s public images)",
                 len(public.classes), f"{len(public):,}")
        classifier = semantic_query_function(config, inputs.query_images()[1], out / "classifier",
                                             device=device, progress=progress)
    setup_seconds = round(time.time() - t0, 1)  # data + semantic classifier, shared by all methods

    for method in config.methods:
        t_method, mdir = time.time(), out / method
        ledger = Ledger(mdir / "ledger.json", delta=config.privacy.delta, epsilon_budget=config.privacy.epsilon,
                        noise_seed=noise_source(config.privacy.seed).describe()) if distributed.is_main() else None
        log.info("method %s (its own release, budget epsilon = %g)", method, config.privacy.epsilon)
        if method == "privimage":
            # 2. DP semantic distribution and 3. selection (the only query of the sensitive data before DP-SGD).
            selection = query_and_select(config, classifier, inputs.query_images()[0], public, ledger,
                                         out / "selection.json") if distributed.is_main() else None
            selection = rank0_selection(selection)
            pretrain_set = selected = apply_selection(public, selection)
            if not config.semantic.labelled:  # one set of public classes: each image gets a random sensitive label
                pretrain_set = random_subset(selected, len(selected), sensitive.classes, seed=config.seed)
        else:
            pretrain_set = baseline_public_data(method, config, public, num_sensitive=len(sensitive.classes))

        # 4. Pre-training on public data (no privacy spent; skipped for the "none" baseline = DPDM).
        t_step = time.time()
        generator = family(config.generator)  # diffusion (PrivImage+D) or gan (PrivImage+G): generators.py
        net = generator.build(config)
        if pretrain_set is not None:
            log.info("4/5 pre-training on %s %s public images (%d steps)", f"{len(pretrain_set):,}",
                     "selected" if method == "privimage" else method, config.pretrain.steps)
            ema = generator.pretrain(net, pretrain_set, config=config, out_dir=mdir / "pretrain", seed=config.seed,
                                     device=device, resume=True, progress=progress,
                                     unconditional=method in UNCONDITIONAL)
            net = ema.requires_grad_(True)  # fine-tuning starts from the pre-trained EMA weights

        # 5. DP fine-tuning on the sensitive data; sigma calibrated so query + DP-SGD meet the budget.
        t_pretrain, t_step = time.time() - t_step, time.time()
        q, steps = plan(config.finetune, len(sensitive))
        sigma = None  # ranks > 0 (no ledger) get rank 0's from finetune
        if distributed.is_main():
            sigma, _ = calibrate_for_ledger(ledger, epsilon=config.privacy.epsilon, sample_rate=q, steps=steps,
                                            accountant=config.privacy.accountant)
            log_finetune_start(ledger, config.finetune.mechanism_name, steps=steps, sigma=sigma, q=q)
        net = generator.finetune(net, sensitive, config=config, noise_multiplier=sigma, ledger=ledger,
                                 out_dir=mdir / "finetune", seed=noise_seed(config, 1), device=device, resume=True,
                                 progress=progress)

        # Sample and evaluate (post-processing: no privacy cost; CA tests on the held-out real split).
        t_finetune = time.time() - t_step
        if distributed.is_main():
            ledger.summary()  # rewrites ledger.json with the final PLD epsilon and the RDP cross-check
            ledgers.append(ledger)
        methods[method] = sample_and_evaluate(config, net, mdir, inputs, ledger, progress=progress)
        methods[method]["seconds"] = round(time.time() - t_method, 1)
        methods[method]["step_seconds"] = {"pretrain": round(t_pretrain, 1), "finetune": round(t_finetune, 1),
                                           **methods[method].get("step_seconds", {})}

    if not distributed.is_main():
        return distributed.broadcast_json(None)  # rank 0's metrics
    real = test if config.evaluate.show_real_images else None  # real images are not DP: only when asked
    save_previews(out / "previews.npz", held_out=real, selected=selected)  # images for the report
    metrics = {
        "epsilon_composed": epsilon_composed(ledgers),  # every method is a release of the same sensitive data
        "delta": config.privacy.delta,
        "ca_split": inputs.test_name,
        "seconds": round(time.time() - t0, 1),
        "setup_seconds": setup_seconds,
        "selection_precision": precision(config, selection),
        "methods": methods,
        "world_size": distributed.world_size(),  # processes (torchrun); a DP fine-tuning resumes with as many
    }
    released, timings = split_timings(metrics)  # wall clock depends on the realised Poisson batches: kept apart
    write_json_atomic(out / FILE_TIMINGS, timings)
    write_json_atomic(out / "metrics.json", released)
    write_report(out)
    return distributed.broadcast_json(metrics)


def log_finetune_start(ledger: Ledger, name: str, *, steps: int, sigma: float, q: float) -> None:
    """The stage header; on a resumed run, how many noisy steps the ledger already holds (never charged again)."""
    charged = next((m.steps for m in ledger.entries if m.name == name), 0)
    if charged:
        log.info("5/5 resuming DP fine-tuning: %d of %d noisy steps already charged in %s (sigma = %.4g, q = %.4g)",
                 charged, steps, ledger.path, sigma, q)
    else:
        log.info("5/5 DP fine-tuning on the sensitive images: %d noisy steps, sigma = %.4g, q = %.4g",
                 steps, sigma, q)


def semantic_query_function(config: RunConfig, public: ImageSet, ckpt_dir: Path, *, device, progress: bool = True):
    """The user's classifier if given, else the run's own (trained once, then reloaded)."""
    path = Path(config.semantic.classifier) if config.semantic.classifier else ckpt_dir
    if not (path / "meta.json").is_file():
        recipe = config.semantic.train or recipe_for(resolve_device(device), resolution=public.resolution)
        model, meta = train_classifier(public, config=recipe, seed=config.seed,
                                       device=None if device == "auto" else device, progress=progress)
        save_classifier(path, model, meta)
        log.info("semantic classifier val accuracy (public data) = %.3f", meta.val_accuracy)
    model, meta = load_classifier(path, device=None if device == "auto" else device)
    if meta.classes != public.classes:
        raise UserError(f"{path}: the classifier's classes are not the public data's classes")
    return model


def query_and_select(config: RunConfig, classifier, sensitive: ImageSet, public: ImageSet, ledger: Ledger,
                     path: Path) -> Selection:
    """Steps 2 and 3; the noisy histogram is released once and only its selection is kept.

    Everything that could make the selection fail is checked before the query is charged.
    """
    s = config.semantic
    if path.is_file() and ledger.has("semantic_query"):
        return Selection.load(path)
    if ledger.has("semantic_query"):
        raise UserError(f"{ledger.path} charged the semantic query but {path} is missing (run killed mid-step); "
                        f"start a new run directory")
    rows = sensitive.classes if s.labelled else [UNLABELLED_CLASS]  # histogram rows (one if unlabelled)
    check_selectable(k=s.k, num_sensitive=len(rows), public_counts=public.counts(), fraction=s.fraction)
    sigma_q = query_sigma(sigma_q=s.sigma_q, query_epsilon=s.query_epsilon, delta=ledger.delta)
    query_epsilon = query_epsilon_of(sigma_q, delta=ledger.delta)
    if ledger.epsilon_budget is not None and query_epsilon >= ledger.epsilon_budget:
        raise UserError(f"semantic query alone spends epsilon {query_epsilon:.4g} >= privacy.epsilon "
                        f"{ledger.epsilon_budget:g}; lower semantic.query_epsilon or raise semantic.sigma_q")
    noise = noise_source(noise_seed(config, 0))
    log.info("2/5 DP semantic distribution: noisy top-%d histogram over %d public classes (sigma_q = %.4g: "
             "query epsilon %.4g of %s; DP-SGD gets the rest)", s.k, len(public.classes), sigma_q, query_epsilon,
             ledger.epsilon_budget)
    noisy = dp_semantic_distribution(classifier, sensitive, k=s.k, sigma_q=sigma_q, noise=noise,
                                     ledger=ledger, labelled=s.labelled)
    selection = select(noisy, k=s.k, public_classes=public.classes, sensitive_classes=rows,
                       public_counts=public.counts(), sigma_q=sigma_q, fraction=s.fraction)
    selection.query_epsilon, selection.epsilon_budget = query_epsilon, ledger.epsilon_budget
    selection.save(path)
    log.info("3/5 selection: %d public classes, %s images", sum(len(c.public_ids) for c in selection.classes),
             f"{selection.n_images:,}")
    return selection


def noise_seed(config: RunConfig, mechanism: int) -> int | None:
    """None (os.urandom) by default; with a test seed, a different stream per mechanism (never shared noise)."""
    return None if config.privacy.seed is None else config.privacy.seed + mechanism


def sample_and_evaluate(config: RunConfig, net: nn.Module, mdir: Path, inputs: Inputs, ledger: Ledger, *,
                        progress: bool) -> dict:
    """Samples (cached in samples.npz) -> CA on the real held-out images (and FID when asked)."""
    stage = distributed.broadcast_json(  # rank 0's files decide; every process samples, rank 0 evaluates
        "evaluated" if (mdir / "metrics.json").is_file() else "sampled" if (mdir / "samples.npz").is_file()
        else "sample" if distributed.is_main() else None)
    if stage == "evaluated":
        return read_json(mdir / "metrics.json") if distributed.is_main() else {}
    s, t_sample, test, classes = config.sample, time.time(), inputs.test, inputs.sensitive.classes
    if stage == "sample":
        generator = family(config.generator)
        log.info("sampling %s images (%s)", f"{s.n:,}", generator.sampler(config))
        x, y = generator.sample(net, config, device=next(net.parameters()).device, progress=progress)
        if distributed.is_main():
            save_samples(mdir / "samples.npz", x, y, classes=list(classes), grid=mdir / "grid.png")
    if not distributed.is_main():
        return {}
    x, y = load_samples(mdir / "samples.npz")
    synthetic = ImageSet(x, y, list(classes), source=str(mdir / "samples.npz"))
    t_eval = time.time()
    result = {"epsilon": ledger.epsilon(), "ca": None, "fid": None}
    if "ca" in config.evaluate.metrics and test is not None:  # the API may run without a test set
        log.info("evaluating CA: %s trained on the samples, tested on the real held-out split",
                 ", ".join(config.evaluate.classifiers))
        ca = classification_accuracies(synthetic, test, classifiers=tuple(config.evaluate.classifiers),
                                       seed=config.seed, progress=progress)
        result.update(ca=ca["mean"], ca_per_classifier=ca["per_classifier"], ca_per_class=ca["per_class"])
    if "fid" in config.evaluate.metrics:
        from privimage.evaluate.fid import fid_of_sets, load_stats  # optional extra [fid]: only when asked for

        e = config.evaluate  # the real images' statistics: precomputed (pytorch-fid .npz), or from the images
        reference = load_stats(e.fid_stats) if e.fid_stats is not None else None
        result["fid"] = fid_of_sets(synthetic, inputs.fid_real, reference=reference, weights=e.fid_weights,
                                    num_samples=e.fid_n_synthetic, device=inputs.device)
        result["fid_real"] = e.fid_stats or e.fid_real_split or inputs.test_name
        result["fid_nonprivate"] = inputs.fid_nonprivate  # True: FID read the sensitive training images un-noised
        result["fid_n_synthetic"] = min(len(synthetic), e.fid_n_synthetic)  # fid_of_sets' num_samples, class-balanced
        result["fid_n_real"] = None if reference is not None else len(inputs.fid_real)  # None: in the .npz stats
    result["step_seconds"] = {"sample": round(t_eval - t_sample, 1), "evaluate": round(time.time() - t_eval, 1)}
    write_json_atomic(mdir / "metrics.json", result)
    return result


def rank0_selection(selection: Selection | None) -> Selection:
    """Rank 0's selection on every process (they pre-train on the same public images); one process: as is."""
    if distributed.world_size() == 1:
        return selection
    return Selection.from_json(distributed.broadcast_json(selection.to_json() if selection else None), where="rank 0")


def precision(config: RunConfig, selection: Selection | None) -> float | None:
    """Fraction of selected public images that truly show the class they feed (demo: digit d <- glyph d)."""
    relevant = config.data.relevant_public
    if relevant is None and config.data.public == "demo:glyphs" and config.data.sensitive == "demo:digits":
        relevant = {d: [d] for d in demo.DIGIT_CLASSES}
    if selection is None or relevant is None:
        return None
    return selection_precision(selection, relevant)
