"""The ServerApp: validate the run config, run the federation, write results."""

from __future__ import annotations

import logging
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from config.errors import ConfigError
from config.logs import configure_logging
from config.run_config import RunConfig
from server_app.federation import run_federation
from server_app.results import ResultsWriter

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one LLM-QFL federation as configured by ``context.run_config``."""
    configure_logging()
    try:
        config = RunConfig.from_flat(context.run_config)
    except ConfigError as err:  # bad settings stop here, before anything slow
        logger.error("invalid run config: %s", err)
        raise
    run_name = f"{time.strftime('%Y%m%d-%H%M%S')}-run{context.run_id}"
    writer = ResultsWriter(config.output.results_dir, run_name)
    writer.write_config(config.to_flat())
    logger.info("results go to %s", writer.path)
    summary = run_federation(grid, config, writer)
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
