"""Alert rules: conditions on metrics, evaluated by the worker, firing alerts and incidents."""
