"""Tests of the engine adapters and the embedded llama.cpp engine process."""
