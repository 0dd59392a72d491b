"""Mutation testing of the money modules (`make mutate`): plant small faults, run the tests.

operators.py makes the mutants of a file, config.py says which files and which tests,
coverage_map.py learns which test runs which line, runner.py runs each mutant's tests
and reports the score per module with every surviving mutant's diff. equivalent.toml lists
the mutants that cannot be told apart from the original, each with the reason.
"""
