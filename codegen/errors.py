"""The one exception type codegen raises for bad input (a contract, the spec, a model)."""


class CodegenError(Exception):
    """Input that codegen cannot turn into its outputs; the message says what and where."""
