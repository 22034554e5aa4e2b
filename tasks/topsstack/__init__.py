"""ISCE2 topsStack stage: command builder, run-file parser, dependency graph, executor."""
