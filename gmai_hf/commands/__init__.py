"""Command-line front ends, one module per ``gmai-hf`` subcommand (see ``gmai_hf.cli``)."""
