"""Pipelines: one package per pipeline, ``include/pipelines/<name>/`` (see docs/pipelines.md).

A pipeline package declares its input contracts, transforms, quality checks and jobs, and
registers itself when imported (``include.etl.jobs.register_pipeline``); the platform imports
``include.pipelines.<name>`` when a job ``<name>.<job>`` is asked for. Nothing in the platform
(``include/etl/``, ``plugins/``) imports from here.
"""
