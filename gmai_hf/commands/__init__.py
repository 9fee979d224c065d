"""Command-line front ends, one module per ``gmai-hf`` subcommand (see ``gmai_hf.cli``)."""

#: ``--dataset``, the same in every command that reads the benchmark.
DATASET_HELP = (
    "a Parquet export of the benchmark (gmai-hf export): a Hub dataset repository, or its folder "
    "(default: the TSVs, from --data-dir or the Hub)"
)
