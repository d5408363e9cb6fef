"""Fixtures shared by the end-to-end modules: ``real_engines`` comes from the plugin
``include.etl.testing.pytest_plugin`` (loaded by ``tests/conftest.py``)."""
