"""Design-space exploration: Pareto fronts, multi-objective search, iso-area arrays."""
