"""Programs built on the library: the demo and the speed benchmark, as typed functions."""
