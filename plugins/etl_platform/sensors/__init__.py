"""Sensors: tasks that wait for something outside Airflow, deferring to the triggerer while they wait."""

from __future__ import annotations

from etl_platform.sensors.landing import LandingFileSensor

__all__ = ["LandingFileSensor"]
