"""Test helpers: fakes of the paid APIs (OpenAI over HTTP), loopback servers, corpora and chat logs
the tests build. Nothing here is product code."""
