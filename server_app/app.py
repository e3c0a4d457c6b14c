"""The ServerApp: parse -> preflight -> set up -> rounds -> summary."""

from __future__ import annotations

import logging
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from config.errors import ConfigError
from config.logs import configure_logging
from config.run_config import RunConfig
from server_app.federation import run_rounds
from server_app.preflight import preflight
from server_app.results import ResultsWriter
from server_app.round_record import summary_record
from server_app.setup import set_up

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
        config.output.results_dir, f"{time.strftime('%Y%m%d-%H%M%S')}-run{context.run_id}"
    )
    writer.write_config(config.to_flat())
    logger.info("results go to %s", writer.path)
    fed = set_up(grid, config, writer)
    stop_reason, rounds_run = run_rounds(grid, fed, writer)
    writer.save_arrays("student.npz", {k: a.numpy() for k, a in fed.arrays.items()})
    writer.write_json(
        "strategy.json", {"class": type(fed.strategy).__name__, **fed.strategy.state()}
    )
    summary = summary_record(
        writer.rounds,
        strategy=type(fed.strategy).__name__,
        stop_reason=stop_reason,
        rounds_run=rounds_run,
        initial=fed.initial,
        majority_rate=fed.split.majority_rate,
        server_rows=len(fed.split.labels),
        total_seconds=time.perf_counter() - fed.started,
        server_embed_seconds=fed.server_embed_seconds,
    )
    writer.write_summary(summary)
    logger.info(
        "run %s: %d rounds (%s), global acc %.3f -> %.3f, loss %.4f -> %.4f",
        summary["status"],
        summary["rounds"],
        summary["stop-reason"],
        summary["initial-global"]["accuracy"],
        summary["final-global"]["accuracy"],
        summary["initial-global"]["loss"],
        summary["final-global"]["loss"],
    )
