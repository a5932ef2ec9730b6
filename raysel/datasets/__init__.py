"""Small real image sets written as files, for examples and benchmarks (never needed at run time)."""
