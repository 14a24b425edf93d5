"""deris_core's command-line tools (predict, evaluate, probe, the benchmarks); the library does not
import them."""
