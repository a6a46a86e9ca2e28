"""The glue of lungcds: configuration, database, routing, Celery tasks, REST API and CLI.

Only this package imports across rooms (``dicom_node``, ``models``, ``reports``).
"""
