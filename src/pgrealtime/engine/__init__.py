"""The protocol-free pub/sub engine: publish, order, resume, fan out, authorize, limit.

Nothing here imports aiohttp, the REST api, the CLI or a wire protocol
(tests/test_imports.py holds that): a protocol adapter turns client frames into calls
here and writes the bytes the engine hands its outboxes.
"""
