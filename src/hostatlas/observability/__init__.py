"""What an operator watches: ``/readyz`` (is anything stuck?) and the Prometheus exposition at ``/metrics``.

Core, like ``http`` and ``pipelines``: it never imports a feature. The composition layer (``app.py``)
hands it what to read (``readiness.Sources``): the database, the pipelines' health, the telemetry
backlog and the queues worth counting. Everything is read when asked (a probe, a scrape), so nothing
here costs a request anything but the request counters of ``requests.RequestMetrics``.
"""
