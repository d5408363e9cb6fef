"""Triggers run by Airflow's triggerer while a deferred task holds no worker slot."""

from __future__ import annotations

from etl_platform.triggers.landing import LandingFileTrigger

__all__ = ["LandingFileTrigger"]
