"""Telemetry's write side: judge an agent's batch, spool it durably, then parse and store it behind the answer.

``decode`` judges and decodes batches (and makes the rows), ``spool`` and ``writer`` make them durable
before the agent's answer, ``storer`` parses (``logparse``, ``logtime``) and stores closed segments, and
``quarantine`` sets aside a frame that cannot be stored. Only ``storage`` is below this package.
"""
