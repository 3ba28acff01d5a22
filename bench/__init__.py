"""
Benchmarks of the chat server against a plain asyncio baseline; see
bench/README.rst.
"""
