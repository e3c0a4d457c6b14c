"""Running the two apps together: in one process (tests, benchmarks) or through flwr run."""
