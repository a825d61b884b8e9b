"""Studies: config, storage and sampler, Ray trial and runner, tables, Pareto maths, rescore, export."""
