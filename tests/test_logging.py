"""Messages through `logging`, progress switches, and TensorBoard event files when tensorboard is installed."""

import importlib.util
import logging

import pytest

from privimage.cli import main
from privimage.log import progress_enabled, setup_cli
from privimage.train.runlog import RunLog

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_progress_follows_tqdm_disable(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_enabled(True)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_enabled(True)


def test_cli_logging_levels(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "0")  # restored after the test: setup_cli may set it
    log = logging.getLogger("privimage.somewhere")
    setup_cli()
    log.info("4/5 pre-training on %s selected images", f"{12500:,}")
    assert capsys.readouterr().err == "privimage: 4/5 pre-training on 12,500 selected images\n"
    setup_cli(quiet=True)
    log.info("hidden")
    log.warning("shown")
    assert capsys.readouterr().err == "privimage: warning: shown\n"
    assert not progress_enabled()  # --quiet also turns the bars off
    setup_cli()  # back to the default for the other tests


def test_switches_are_accepted_after_the_command(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert main(["config", "list", "--quiet"]) == 0
    assert "privimage:demo.yaml" in capsys.readouterr().out
    assert not progress_enabled()
    setup_cli()


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard not installed (optional: privimage[tensorboard])")
def test_runlog_writes_tensorboard_events(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("PRIVIMAGE_TENSORBOARD", raising=False)
    log = RunLog(tmp_path / "finetune")
    for step in (10, 20):
        log.write(step, epsilon=step / 10, noisy_grad_norm=0.5)
    events = EventAccumulator(str(tmp_path / "finetune" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("finetune/epsilon")] == [(10, 1.0), (20, 2.0)]
    monkeypatch.setenv("PRIVIMAGE_TENSORBOARD", "0")
    assert RunLog(tmp_path / "other").tensorboard is None


def test_resume_line_counts_the_steps_already_charged(tmp_path, caplog):
    from privimage.pipeline import log_finetune_start
    from privimage.privacy.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=10.0)
    logger = logging.getLogger("privimage")
    logger.addHandler(caplog.handler)  # setup_cli may have stopped propagation to the root logger
    try:
        with caplog.at_level(logging.INFO, logger="privimage"):
            log_finetune_start(ledger, "finetune", steps=106, sigma=1.5, q=0.19)
            ledger.open_dpsgd("finetune", sample_rate=0.19, noise_multiplier=1.5, planned_steps=106)
            for _ in range(40):
                ledger.charge_step("finetune")
            log_finetune_start(ledger, "finetune", steps=106, sigma=1.5, q=0.19)
    finally:
        logger.removeHandler(caplog.handler)
    first, second = caplog.messages[-2:]
    assert first.startswith("5/5 DP fine-tuning on the sensitive images: 106 noisy steps")
    assert second.startswith("5/5 resuming DP fine-tuning: 40 of 106 noisy steps already charged in")
