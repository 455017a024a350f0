"""Telemetry's read side: a metrics or logs request's parameters made into a store query (``params``), and the
services behind the REST reads (``service``): series, metric names, log search.
"""
