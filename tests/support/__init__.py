"""Shared test helpers: the tiny GGUF model and real llama.cpp servers for tests."""
