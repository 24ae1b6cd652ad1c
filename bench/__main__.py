"""``python -m bench``: run the benchmarks and print one table."""

from bench.run import main

main()
