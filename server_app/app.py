"""The ServerApp: parse -> preflight -> set up -> rounds -> summary."""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from config.errors import ConfigError
from config.logs import configure_logging
from config.run_config import RunConfig
from server_app.preflight import preflight
from server_app.results import ResultsWriter
from server_app.round_flow import run_rounds
from server_app.round_record import summary_record
from server_app.server_data import evaluate_global
from server_app.setup import Federation, set_up
from server_app.teacher_report import teacher_summary

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one LLM-QFL federation as configured by ``context.run_config``."""
    configure_logging()
    try:  # bad settings stop here, before anything slow or written
        config = RunConfig.from_flat(context.run_config)
        preflight(config)
    except ConfigError as err:
        logger.error("invalid run config: %s", err)
        raise
    writer = ResultsWriter(
        config.output.results_dir,
        f"{time.strftime('%Y%m%d-%H%M%S')}-run{context.run_id}",
        metrics_logger=config.output.metrics_logger,
    )
    writer.write_config(config.to_flat())
    logger.info(
        "run %s: %s strategy, results go to %s",
        context.run_id,
        config.federation.strategy,
        writer.path,
    )
    fed = set_up(grid, config, writer)
    stop_reason, rounds_run = run_rounds(grid, fed, writer)
    summary, final_name, teacher = _finish(fed, writer, stop_reason, rounds_run)
    logger.info(
        "run %s after %d rounds (%s): %stest acc %.3f, %s (majority %.3f); validation acc "
        "%.3f -> %.3f; results in %s",
        summary["status"],
        summary["rounds"],
        summary["stop-reason"],
        final_name,
        summary["final-test"]["accuracy"],
        _teacher_words(teacher),
        summary["test-majority-rate"],
        summary["initial-val"]["accuracy"],
        summary["final-val"]["accuracy"],
        writer.path,
    )


def _finish(
    fed: Federation, writer: ResultsWriter, stop_reason: str, rounds_run: int
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Save the final student and the strategy's state, score the test rows once, summarise.

    Returns the summary written, how the final line names the final student,
    and the teacher's summary.
    """
    config = fed.config
    final, final_round = fed.final_student()
    writer.save_arrays("student.npz", {k: a.numpy() for k, a in final.items()})
    writer.write_json(
        "strategy.json", {"class": type(fed.strategy).__name__, **fed.strategy.state()}
    )
    averaged = [r for r, _ in fed.recent] if config.final_model == "average" else []
    # The mean of the last rounds' students was never scored on the validation split: score it.
    final_val = evaluate_global(fed.student, final, fed.data.val) if averaged else None
    test = evaluate_global(fed.student, final, fed.data.test)  # the one read of the test rows
    teacher = teacher_summary(
        config,
        writer.rounds,
        fed.teachers.global_arrays if fed.teachers is not None else None,
        fed.data.val_rows,
        fed.data.test_rows,
    )
    summary = summary_record(
        writer.rounds,
        strategy=type(fed.strategy).__name__,
        stop_reason=stop_reason,
        rounds_run=rounds_run,
        final_round=final_round,
        final_val=final_val,
        averaged_rounds=averaged,
        val_split={"rows": len(fed.data.val.labels), "majority-rate": fed.data.val.majority_rate},
        test={
            **test,
            "rows": len(fed.data.test.labels),
            "majority-rate": fed.data.test.majority_rate,
        },
        total_seconds=time.perf_counter() - fed.started,
        server_embed_seconds=fed.server_embed_seconds,
        test_embed_seconds=fed.data.test_embed_seconds,
        teacher=teacher,
    )
    writer.write_summary(summary)
    return summary, _final_name(final_round, averaged), teacher


def _teacher_words(teacher: dict[str, Any]) -> str:
    """How the final line names the teacher's accuracy (test where the server holds it)."""
    if teacher["test-accuracy"] is not None:
        return f"federated teacher {teacher['test-accuracy']:.3f}"
    return f"local teachers {teacher['clients-val-accuracy']:.3f} on their clients' validation rows"


def _final_name(final_round: int, averaged: list[int]) -> str:
    """How the log line names the final student ('' for the last round's)."""
    if averaged:
        return f"the mean of the students of rounds {averaged[0]}-{averaged[-1]}, "
    return f"the student of round {final_round}, " if final_round >= 0 else ""
