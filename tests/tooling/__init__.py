"""Tests of the tooling: codegen, xtask, and the files they generate."""
