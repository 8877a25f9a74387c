"""The OpenAI-compatible surface: OpenAI requests mapped onto OrchQueue tasks and back.

`requests` turns a completion or chat request into a TaskRequest and its engine options,
`render` turns the task's typed events into OpenAI bodies and stream chunks, `errors`
renders every failure in OpenAI's error shape. The handlers are in
`orchestratord_server.handlers.openai`; docs/openai-compat.md says what is supported.
"""
